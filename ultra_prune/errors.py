"""Errors ultra-prune raises for bad input: each message names the problem and the fix."""


class UltraPruneError(ValueError):
    """A user-facing error; the CLI prints its message on one line and exits non-zero."""

"""Warnings and errors through ultralytics' LOGGER, in its look (``WARNING ⚠️ ...`` / ``ERROR ❌ ...``)."""

import contextlib
import logging

from ultra_prune.patches.versions import formatter_prefixes

PREFIXES = {"warning": "WARNING ⚠️", "error": "ERROR ❌"}


def log(level: str, message: str) -> None:
    """Log ``message`` at ``level`` ('warning' or 'error') through ultralytics' LOGGER as ``WARNING ⚠️ <message>`` /
    ``ERROR ❌ <message>``, adding the prefix only where the LOGGER's formatter does not."""
    from ultralytics.utils import LOGGER

    prefix = PREFIXES[level]
    levelno = getattr(logging, level.upper())
    if not formatter_prefixes(LOGGER, levelno, prefix.split()[0]):
        message = f"{prefix} {message}"
    LOGGER.log(levelno, message)


@contextlib.contextmanager
def quiet():
    """ultralytics' LOGGER at WARNING while the block runs (no export or validation chatter about temporary files)."""
    from ultralytics.utils import LOGGER

    level = LOGGER.level
    LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)

"""Warnings and errors through ultralytics' LOGGER, in its look (``WARNING ⚠️ ...`` / ``ERROR ❌ ...``)."""

import contextlib
import logging
import re

PREFIXES = {"warning": "WARNING ⚠️", "error": "ERROR ❌"}


def _formatter_prefixes(logger: logging.Logger, level: int, word: str) -> bool:
    """Whether one of ``logger``'s handlers puts ``word`` right before each message of ``level``: newer ultralytics'
    formatter does; older releases (8.3.100 and before, at least) format a bare ``%(message)s`` and put the prefix in
    each message themselves. A handler that prints the level among other fields (pytest's
    ``%(levelname)s %(name)s:... %(message)s``) does not count."""
    probe = "ultrapruneprobe"
    for handler in logger.handlers:
        record = logging.LogRecord(logger.name, level, __file__, 0, probe, None, None)  # fresh: formatters edit it
        try:
            if re.search(rf"\b{word}\W*{probe}", (handler.formatter or logging.Formatter()).format(record)):
                return True
        except Exception:  # noqa: BLE001 - a custom formatter that cannot format a bare record
            continue
    return False


def log(level: str, message: str) -> None:
    """Log ``message`` at ``level`` ('warning' or 'error') through ultralytics' LOGGER as ``WARNING ⚠️ <message>`` /
    ``ERROR ❌ <message>``, adding the prefix only where the LOGGER's formatter does not."""
    from ultralytics.utils import LOGGER

    prefix = PREFIXES[level]
    levelno = getattr(logging, level.upper())
    if not _formatter_prefixes(LOGGER, levelno, prefix.split()[0]):
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

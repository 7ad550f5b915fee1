"""Fixes for old ultralytics releases on a current torch/numpy stack."""

import logging
import os

from ultra_prune.hookspecs import hookimpl

PREFIXES = {"warning": "WARNING ⚠️", "error": "ERROR ❌"}


def _formatter_prefixes(logger: logging.Logger, level: int, word: str) -> bool:
    """Whether ``logger``'s handlers already prefix records of ``level`` with ``word``: newer ultralytics' formatter
    does; older releases (8.3.100 and before, at least) format a bare ``%(message)s`` and put the prefix in each
    message themselves."""
    record = logging.LogRecord(logger.name, level, __file__, 0, "", None, None)
    for handler in logger.handlers:
        try:
            if word in (handler.formatter or logging.Formatter()).format(record):
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


@hookimpl
def ultra_prune_patch(ultralytics):
    import numpy as np
    from ultralytics.utils import metrics

    # <= 8.3.107 computes AP with np.trapz, which numpy 2.4 removed.
    if not hasattr(np, "trapz") and "trapz" in metrics.compute_ap.__code__.co_names:
        np.trapz = np.trapezoid

    # <= 8.2.63 calls torch.load without weights_only=False, which torch >= 2.6 refuses for checkpoints holding
    # modules; later ultralytics passes weights_only=False itself (ultralytics.utils.patches.torch_load).
    from ultralytics.utils import patches

    if not hasattr(patches, "torch_load"):
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

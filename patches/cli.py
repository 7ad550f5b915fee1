"""The ``yolo`` CLI: a ``prune`` mode, and ultra-prune errors as one line with a non-zero exit."""

from __future__ import annotations

import functools
import sys

from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl


def wrap_entrypoint(entrypoint):
    """Run the stock entrypoint; an UltraPruneError becomes ``ERROR ❌ ultra-prune: <message>`` and exit 2."""

    @functools.wraps(entrypoint)
    def wrapper(*args, **kwargs):
        try:
            return entrypoint(*args, **kwargs)
        except UltraPruneError as e:
            from ultralytics.utils import LOGGER

            LOGGER.error(f"ultra-prune: {e}")
            sys.exit(2)

    wrapper._ultra_prune = True
    return wrapper


@hookimpl
def ultra_prune_patch(ultralytics):
    from ultralytics import cfg

    if hasattr(cfg, "MODES") and "prune" not in cfg.MODES:  # module global read at call time (>= 8.0.45)
        cfg.MODES = type(cfg.MODES)([*cfg.MODES, "prune"])
    if not getattr(cfg.entrypoint, "_ultra_prune", False):
        cfg.entrypoint = wrap_entrypoint(cfg.entrypoint)

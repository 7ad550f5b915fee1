"""Adds ultra-prune's keys to ultralytics' default cfg, so both `yolo k=v` and Python kwargs accept them."""

from ultra_prune.config.keys import DEFAULTS
from ultra_prune.hookspecs import hookimpl


def add_default_keys() -> None:
    """Add the new keys to DEFAULT_CFG_DICT (DEFAULT_CFG_KEYS is a live view of it) and DEFAULT_CFG."""
    from ultralytics import utils

    for key, value in DEFAULTS.items():
        utils.DEFAULT_CFG_DICT.setdefault(key, value)
        if not hasattr(utils.DEFAULT_CFG, key):
            setattr(utils.DEFAULT_CFG, key, value)
    keys = getattr(utils, "DEFAULT_CFG_KEYS", None)
    if isinstance(keys, (set, frozenset)) and not keys >= DEFAULTS.keys():  # a copy, not a view
        utils.DEFAULT_CFG_KEYS = type(keys)(keys | DEFAULTS.keys())


@hookimpl
def ultra_prune_patch(ultralytics):
    add_default_keys()

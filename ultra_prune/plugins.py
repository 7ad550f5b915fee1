"""The plugin manager: built-in and third-party plugins, all loaded from the ``ultra_prune`` entry-point group."""

from __future__ import annotations

import importlib
from functools import lru_cache

import pluggy

from ultra_prune import hookspecs

GROUP = "ultra_prune"
# The built-in plugins, in the order pyproject.toml declares them; registered directly when the package
# runs from a source tree without installed metadata.
BUILTINS = {
    "compat": "ultra_prune.patches.compat",
    "cfg": "ultra_prune.patches.cfg",
    "model": "ultra_prune.patches.model",
    "cli": "ultra_prune.patches.cli",
    "trainer": "ultra_prune.trainer",
    "rules": "ultra_prune.pruning.rules",
}


@lru_cache(maxsize=None)
def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager with every plugin of the entry-point group registered."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(GROUP)
    for name, module in BUILTINS.items():
        if not pm.has_plugin(name):
            pm.register(importlib.import_module(module), name=name)
    return pm

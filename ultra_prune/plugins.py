"""The plugin manager: built-in and third-party plugins, all loaded from the ``ultra_prune`` entry-point group."""

from __future__ import annotations

import importlib

import pluggy

from ultra_prune import hookspecs

GROUP = "ultra_prune"
# The built-in plugins, as pyproject.toml declares them; registered directly when the package runs from a
# source tree without installed metadata.
BUILTINS = {
    "compat": "ultra_prune.patches.compat",
    "cfg": "ultra_prune.patches.cfg",
    "model": "ultra_prune.patches.model",
    "cli": "ultra_prune.patches.cli",
    "trainer": "ultra_prune.trainer",
    "rules": "ultra_prune.pruning.rules",
}
_manager: pluggy.PluginManager | None = None
_initializing: dict[str, object] = {}  # plugins loaded while their module was still being imported


def _is_initializing(module) -> bool:
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager with every plugin of the entry-point group registered.

    A plugin module that imports ultra_prune first (``from ultra_prune.hookspecs import hookimpl``) is loaded
    while it is still half-imported; it is registered again, complete, on the next call.
    """
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        pm.load_setuptools_entrypoints(GROUP)
        for name, module in BUILTINS.items():
            if not pm.has_plugin(name):
                pm.register(importlib.import_module(module), name=name)
        _initializing.update({n: p for n, p in pm.list_name_plugin() if _is_initializing(p)})
        _manager = pm
    for name, module in list(_initializing.items()):
        if not _is_initializing(module):
            _manager.unregister(name=name)
            _manager.register(module, name=name)
            del _initializing[name]
    return _manager

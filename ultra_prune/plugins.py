"""The plugin manager: built-in and third-party plugins, all loaded from the ``ultra_prune`` entry-point group.

``BUILTINS`` is that group's table for the built-in plugins, written here only: ``setup.py`` reads it into the
package metadata, and a source tree without installed metadata registers it directly."""

from __future__ import annotations

import importlib
from importlib import metadata

import pluggy

from ultra_prune import hookspecs

GROUP = "ultra_prune"
# The built-in plugins (entry-point name -> module); setup.py reads this literal into the package metadata.
BUILTINS = {
    "compat": "ultra_prune.patches.compat",
    "cfg": "ultra_prune.patches.cfg",
    "model": "ultra_prune.patches.model",
    "cli": "ultra_prune.patches.cli",
    "trainer": "ultra_prune.train.trainer",
}
_manager: pluggy.PluginManager | None = None
_builtins_registered = False


def _entry_points(builtin: bool) -> list:
    """The group's installed entry points: the built-in plugins' or the third-party ones."""
    found = metadata.entry_points()
    found = found.select(group=GROUP) if hasattr(found, "select") else found.get(GROUP, [])  # Python 3.9: a dict
    return [ep for ep in found if (ep.name in BUILTINS) == builtin]


def _register(pm: pluggy.PluginManager, builtin: bool) -> None:
    for ep in _entry_points(builtin):
        if not pm.has_plugin(ep.name) and not pm.is_blocked(ep.name):
            pm.register(ep.load(), name=ep.name)


def _plugins() -> pluggy.PluginManager:
    """The process-wide plugin manager, with at least the third-party plugins registered (the pruner's rules
    need no more, and load neither the patches nor the trainers)."""
    global _manager
    if _manager is None:
        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        _register(pm, builtin=False)
        _manager = pm
    return _manager


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager with every plugin of the entry-point group registered (the built-in
    ones from ``BUILTINS`` where a source tree has no installed metadata)."""
    global _builtins_registered
    pm = _plugins()
    if not _builtins_registered:
        _register(pm, builtin=True)
        for name, module in BUILTINS.items():
            if not pm.has_plugin(name):
                pm.register(importlib.import_module(module), name=name)
        _builtins_registered = True
    return pm


def channel_rule(module):
    """The channel rule a plugin gives ``module`` (its ``ultra_prune_channel_rule`` hook), or None."""
    return _plugins().hook.ultra_prune_channel_rule(module=module)

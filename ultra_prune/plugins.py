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
}
_manager: pluggy.PluginManager | None = None


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager with every plugin of the entry-point group registered; plugins'
    channel rules are then found by the pruner (``rules.add_rule_lookup``)."""
    global _manager
    if _manager is None:
        from ultra_prune.pruning.rules import add_rule_lookup

        pm = pluggy.PluginManager(GROUP)
        pm.add_hookspecs(hookspecs)
        pm.load_setuptools_entrypoints(GROUP)
        for name, module in BUILTINS.items():
            if not pm.has_plugin(name):
                pm.register(importlib.import_module(module), name=name)
        add_rule_lookup(lambda module: pm.hook.ultra_prune_channel_rule(module=module))
        _manager = pm
    return _manager

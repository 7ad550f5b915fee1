"""The hooks ultra-prune plugins implement. Plugins are found through the ``ultra_prune`` entry-point group."""

import pluggy

hookspec = pluggy.HookspecMarker("ultra_prune")
hookimpl = pluggy.HookimplMarker("ultra_prune")


@hookspec
def ultra_prune_patch(ultralytics):
    """Patch the imported ``ultralytics`` package. Gate on features, be idempotent, return nothing."""


@hookspec(firstresult=True)
def ultra_prune_trainer(task):
    """Return the trainer class for ``task`` when ultra-prune arguments are used, or None."""


@hookspec(firstresult=True)
def ultra_prune_channel_rule(module):
    """Return the channel rule for ``module`` (a callable ``rule(graph, module, x) -> Signal``), or None.

    See ``ultra_prune.pruning.rules`` for the built-in rules and ``ultra_prune.pruning.graph`` for the graph API.
    """

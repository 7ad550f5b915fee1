"""ultra-prune: network slimming for Ultralytics YOLO, as a plugin.

After ``pip install``, a start-up hook applies the version-gated patches whenever ``ultralytics`` is imported
(unless ``ULTRA_PRUNE_DISABLE=1``); ``ultra_prune.apply()`` applies them by hand (idempotent). Importing this package,
or its pruning core, changes nothing in ultralytics.

The layers, lowest first (each imports only from those below it): ``errors``, ``hookspecs`` and
``patches.versions`` (what the installed ultralytics offers); ``config`` (the key table) and ``plugins``;
``pruning`` (the pruner); ``io`` (checkpoints, logs, figures); ``latency``; ``slimming`` (sparsity, the target
schedule, distillation); ``engine`` (prune once); ``train`` (the trainers); ``commands`` (prune, demo, the CLI);
``patches`` (the plugins that patch ultralytics). The names below load their layer on first use, so importing a
low layer (``ultra_prune.config``) loads neither torch nor the pruner.
"""

import importlib

from ultra_prune import moved
from ultra_prune.errors import UltraPruneError

__version__ = "0.1.0"
__all__ = ["UltraPruneError", "__version__", "apply", "prune", "prune_model"]
moved.install()  # old module paths, for pickles of earlier releases
_LAZY = {"apply": "ultra_prune.patches", "prune": "ultra_prune.commands.prune", "prune_model": "ultra_prune.pruning"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ultra_prune' has no attribute {name!r}")

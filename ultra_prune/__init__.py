"""ultra-prune: network slimming for Ultralytics YOLO, as a plugin.

After ``pip install``, a start-up hook applies the version-gated patches whenever ``ultralytics`` is imported
(unless ``ULTRA_PRUNE_DISABLE=1``); ``ultra_prune.apply()`` applies them by hand (idempotent). Importing this package,
or its pruning core, changes nothing in ultralytics.
"""

__version__ = "0.1.0"

from ultra_prune.api import prune
from ultra_prune.errors import UltraPruneError
from ultra_prune.patches import apply
from ultra_prune.pruning import prune_model

__all__ = ["UltraPruneError", "__version__", "apply", "prune", "prune_model"]

"""ultra-prune: network slimming for Ultralytics YOLO, as a plugin.

``import ultra_prune`` applies the version-gated patches (idempotent); after ``pip install`` a start-up hook does
the same whenever ``ultralytics`` is imported, unless ``ULTRA_PRUNE_DISABLE=1``.
"""

__version__ = "0.1.0"

from ultra_prune.patches import apply

apply()

from ultra_prune.api import prune  # noqa: E402
from ultra_prune.errors import UltraPruneError  # noqa: E402
from ultra_prune.pruning import prune_model  # noqa: E402

__all__ = ["UltraPruneError", "__version__", "apply", "prune", "prune_model"]

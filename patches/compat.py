"""Fixes for old ultralytics releases on a current torch/numpy stack."""

import os

from ultra_prune.hookspecs import hookimpl


@hookimpl
def ultra_prune_patch(ultralytics):
    import numpy as np
    from ultralytics.utils import metrics

    # <= 8.3.107 computes AP with np.trapz, which numpy 2.4 removed.
    if not hasattr(np, "trapz") and "trapz" in metrics.compute_ap.__code__.co_names:
        np.trapz = np.trapezoid

    # <= 8.2.63 calls torch.load without weights_only=False, which torch >= 2.6 refuses for checkpoints holding
    # modules; later ultralytics passes weights_only=False itself (ultralytics.utils.patches.torch_load).
    from ultralytics.utils import patches

    if not hasattr(patches, "torch_load"):
        os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

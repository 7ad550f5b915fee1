"""Fixes for old ultralytics releases on a current torch/numpy stack."""

import functools
import importlib
import inspect

from ultra_prune.hookspecs import hookimpl
from ultra_prune.patches import is_ours, ours

def _onnx_defaults_to_dynamo() -> bool:
    """torch >= 2.9: ``torch.onnx.export`` defaults to ``dynamo=True``, the exporter that needs onnxscript."""
    import torch.onnx

    param = inspect.signature(torch.onnx.export).parameters.get("dynamo")
    return param is not None and param.default is True


def legacy_onnx_by_default(export):
    """Wrap ``Model.export``: while it runs, ``torch.onnx.export`` calls that do not choose ``dynamo`` get the
    TorchScript exporter that ultralytics was written for (what later ultralytics passes itself)."""

    @functools.wraps(export)
    def wrapper(self, *args, **kwargs):
        if not _onnx_defaults_to_dynamo():
            return export(self, *args, **kwargs)
        import torch.onnx

        original = torch.onnx.export

        @functools.wraps(original)
        def onnx_export(*a, **k):
            k.setdefault("dynamo", False)
            return original(*a, **k)

        torch.onnx.export = onnx_export
        try:
            return export(self, *args, **kwargs)
        finally:
            torch.onnx.export = original

    return ours(wrapper)


# The modules of ultralytics <= 8.2.63 that load checkpoints with ``torch.load`` (those that later releases route
# through ultralytics.utils.patches.torch_load); tests/test_compat.py checks this list against the installed source.
CHECKPOINT_LOADERS = (
    "ultralytics.nn.tasks",  # torch_safe_load: YOLO('x.pt'), training from a .pt, resume, DDP workers
    "ultralytics.utils.torch_utils",  # strip_optimizer, at the end of every training
    "ultralytics.engine.tuner",  # reads train_metrics back from each tuning run
    "ultralytics.models.nas.model",
    "ultralytics.models.sam.build",
)


class CheckpointTorch:
    """``torch`` as one ultralytics module sees it: torch itself, except that ``load`` defaults to
    ``weights_only=False``, as later ultralytics passes it. Only that module's global is replaced; ``torch.load``,
    ``os.environ`` and every other caller are left alone, so the user's own loads keep torch's safe default."""

    __slots__ = ("_torch",)  # setting an attribute here fails loudly instead of shadowing torch's

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        if name == "_torch":  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self._torch, name)

    def __dir__(self):
        return dir(self._torch)

    def __repr__(self):
        return f"<{self._torch!r}, load() with weights_only=False by default (ultra-prune)>"

    def load(self, *args, **kwargs):
        kwargs.setdefault("weights_only", False)
        return self._torch.load(*args, **kwargs)


def confine_full_loads() -> list[str]:
    """Give each module of CHECKPOINT_LOADERS a ``CheckpointTorch`` as its ``torch``; return the modules patched
    (those already patched are skipped, so this is idempotent). A no-op where torch.load has no ``weights_only``."""
    import torch

    if "weights_only" not in inspect.signature(torch.load).parameters:  # torch < 1.13: loads everything anyway
        return []
    done = []
    for name in CHECKPOINT_LOADERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # not in this release
            continue
        if getattr(module, "torch", None) is torch:
            module.torch = CheckpointTorch(torch)
            done.append(name)
    return done


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
        confine_full_loads()

    # Old exporters call torch.onnx.export without dynamo=, which torch >= 2.9 turns into the dynamo exporter
    # (an ImportError without onnxscript); the call-time gate in the wrapper leaves newer torch/ultralytics alone.
    from ultralytics.engine.model import Model

    if not is_ours(Model.export):
        Model.export = legacy_onnx_by_default(Model.export)

"""Torch-Pruning's YOLOv8 recipe, rebuilt for the side-by-side benchmark (a benchmark-only extra, never a runtime
dependency of ultra-prune). Uses only Torch-Pruning's public API:

- C2f's ``cv1(x).chunk(2)`` is not traceable for its dependency graph, so every C2f is swapped for ``C2fSplit``,
  which computes the two halves with two convs (the adaptation its YOLOv8 example needs; written here);
- sparse training adds ``GroupNormPruner.regularize`` (its group-L2 sparsity-learning regulariser) to every step;
- pruning uses group-L2 magnitude importance, the same ratio in every layer (``global_pruning=False``), the
  Detect head ignored, in progressive steps until the GFLOPs target is reached.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ultra_prune.train.trainer import SlimDetectionTrainer


class C2fSplit(nn.Module):
    """C2f with ``cv1`` split into ``cv0`` / ``cv1`` (one conv per chunk half); same outputs as the C2f it replaces."""

    def __init__(self, c2f: nn.Module):
        super().__init__()
        c = c2f.c
        self.cv0, self.cv1 = copy.deepcopy(c2f.cv1), copy.deepcopy(c2f.cv1)
        for conv, half in ((self.cv0, slice(0, c)), (self.cv1, slice(c, 2 * c))):
            conv.conv = nn.Conv2d(conv.conv.in_channels, c, conv.conv.kernel_size, conv.conv.stride,
                                  conv.conv.padding, bias=False)
            conv.conv.weight.data = c2f.cv1.conv.weight.data[half].clone()
            bn = nn.BatchNorm2d(c, eps=c2f.cv1.bn.eps, momentum=c2f.cv1.bn.momentum)
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, name).data = getattr(c2f.cv1.bn, name).data[half].clone()
            conv.bn = bn
        self.m, self.cv2 = c2f.m, c2f.cv2
        for key in ("f", "i", "type", "np"):
            if hasattr(c2f, key):
                setattr(self, key, getattr(c2f, key))

    def forward(self, x):
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


def split_c2f(model: nn.Module) -> nn.Module:
    """Swap every top-level C2f of an ultralytics model for C2fSplit (in place); return the model."""
    for i, m in enumerate(model.model):
        if type(m).__name__ == "C2f":
            model.model[i] = C2fSplit(m)
    return model


def make_pruner(model: nn.Module, imgsz: int, ratio: float = 0.9, steps: int = 1):
    """Torch-Pruning's GroupNormPruner for an ultralytics detection model (Detect ignored, layer-uniform ratio)."""
    import torch_pruning as tp

    if not any(p.requires_grad for p in model.parameters()):  # a loaded checkpoint: tracing needs autograd
        for p in model.parameters():
            p.requires_grad_(True)
    training = model.training
    model.eval()  # trace without touching BatchNorm running statistics
    try:
        return tp.pruner.GroupNormPruner(
            model, torch.zeros(1, 3, imgsz, imgsz), importance=tp.importance.GroupMagnitudeImportance(p=2),
            iterative_steps=steps, pruning_ratio=ratio, ignored_layers=[model.model[-1]], global_pruning=False,
        )
    finally:
        model.train(training)


class TPSparseTrainer(SlimDetectionTrainer):
    """Sparse training the Torch-Pruning way: ``GroupNormPruner.regularize`` on the gradients before every step."""

    tp_pruner = None

    def optimizer_step(self):
        model = getattr(self.model, "module", self.model)
        if self.tp_pruner is None:
            self.tp_pruner = make_pruner(model, self.args.imgsz)
        self.tp_pruner.regularize(model)
        super().optimizer_step()


def prune_progressively(model: nn.Module, target_gflops: float, imgsz: int, gflops, steps: int = 40) -> nn.Module:
    """Prune ``model`` in place by Torch-Pruning's scheduled steps until ``gflops(model, imgsz) <= target_gflops``."""
    model.eval()
    pruner = make_pruner(model, imgsz, ratio=0.95, steps=steps)
    for _ in range(steps):
        pruner.step()
        if gflops(model, imgsz) <= target_gflops:
            break
    return model

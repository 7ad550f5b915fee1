"""FLOPs of a model as its channel widths change, counted the way ultralytics' ``get_flops`` (thop) counts them.

Convolutions cost ``2 * out_elements * (in_channels / groups * k_h * k_w)`` (a Linear layer is a 1x1 conv on one
pixel) and affine BatchNorms
``2 * 4 * elements`` (thop's operation counts times ultralytics' factor 2). Both scale with the widths the pruner changes, so a
pruning plan's GFLOPs are known without slicing the model. Other layers (heads' decoding, attention) are a
constant: the difference to one real count, when given.

Knows torch only.
"""

from __future__ import annotations

import torch
from torch import nn

from ultra_prune.pruning.probe import forward_zeros


class FlopsModel:
    """Per-conv FLOPs at ``imgsz`` for the current in/out widths; ``remove`` updates them as channels go."""

    def __init__(self, model: nn.Module, imgsz: int = 640, total: float | None = None):
        """``total``: the model's FLOPs by the reference counter (e.g. ultralytics' ``get_flops`` x 1e9); what
        the per-conv count misses of it is kept as a constant."""
        self.area: dict[nn.Module, int] = {}  # output pixels of each conv (rows of each Linear)
        self.bn_of: dict[nn.Conv2d, nn.BatchNorm2d] = {}
        hooks = {}
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                hooks[m] = lambda mod, _i, y: self.area.__setitem__(mod, y[0].numel() // y.shape[1])
            conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                self.bn_of[conv] = bn
        stride = max(int(getattr(model, "stride", torch.tensor([32])).max()), 32)
        size = max(stride, int(imgsz) // stride * stride)
        forward_zeros(model, size, hooks)
        self.scale = (int(imgsz) / size) ** 2  # thop extrapolates from stride-aligned proxies; so does this
        self.cin = {c: getattr(c, "in_channels", getattr(c, "in_features", 0)) for c in self.area}
        self.cout = {c: getattr(c, "out_channels", getattr(c, "out_features", 0)) for c in self.area}
        self.groups = {c: getattr(c, "groups", 1) for c in self.area}
        self.initial = self.flops()
        self.total = float(total) if total else self.initial

    def conv_flops(self, c: nn.Module) -> float:
        k = c.kernel_size[0] * c.kernel_size[1] if isinstance(c, nn.Conv2d) else 1
        macs = self.area[c] * self.cout[c] * (self.cin[c] // self.groups[c] * k)
        bn = 4 * self.area[c] * self.cout[c] if c in self.bn_of else 0  # thop: 2 ops per element, x2 if affine
        return 2.0 * (macs + bn) * self.scale

    def flops(self) -> float:
        """FLOPs of every conv (+ its BN) at the current widths."""
        return sum(self.conv_flops(c) for c in self.area)

    def removed(self) -> float:
        """FLOPs saved by every ``remove`` so far."""
        return self.initial - self.flops()

    def remove(self, space, n: int) -> float:
        """Remove ``n`` channels of ``space`` (a ``graph.Space``) from the width counts; return the FLOPs saved.
        Convs an inference pass never runs (training-only branches: Pose26's sigmas, Proto26's semantic head) cost
        nothing here, as in ultralytics' count."""
        counted = self.area.keys()
        touched = {m.conv for m, _ in space.producers + space.depthwise} | {c.conv for c in space.consumers}
        touched &= counted
        before = sum(self.conv_flops(c) for c in touched)
        for m, _ in space.producers + space.depthwise:
            if m.conv in counted:
                self.cout[m.conv] -= n
        for m, _ in space.depthwise:
            if m.conv in counted:
                self.cin[m.conv] -= n
                self.groups[m.conv] -= n
        for c in space.consumers:
            if c.conv in counted:
                self.cin[c.conv] -= n
        return before - sum(self.conv_flops(c) for c in touched)

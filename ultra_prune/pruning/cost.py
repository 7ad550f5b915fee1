"""What a model costs as its channel widths change: FLOPs (counted the way ultralytics' ``get_flops``/thop counts
them) or latency (from a table of per-layer times measured on a runtime).

Both follow the widths of every convolution the pruner changes (``WidthCount.remove``), so a pruning plan's cost
is known without slicing the model. FLOPs: a convolution costs ``2 * out_elements * (in_channels / groups * k_h *
k_w)`` (a Linear layer is a 1x1 conv on one pixel) and its affine BatchNorm ``2 * 4 * elements`` (thop's operation
counts times ultralytics' factor 2); other layers (heads' decoding, attention) are a constant, the difference to
one real count when given. Latency: each convolution's time at its current widths from a ``LayerTimes`` table,
scaled by ``alpha``, plus a constant ``beta`` for everything else (both fitted to whole-model timings).

Knows torch only.
"""

from __future__ import annotations

import weakref
from typing import NamedTuple, Protocol

import torch
from torch import nn

from ultra_prune.pruning.probe import forward_zeros


_PIXELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(size, parameter shapes): pixels}


def _pixels(model: nn.Module, size: int) -> tuple[dict, dict]:
    """``(output pixels, input (height, width))`` of every conv and Linear one inference pass of ``model`` at
    ``size`` runs, in the order it runs them; remembered per model while its parameter shapes stay the same (the
    cost models and the latency table's keys ask for the same model several times)."""
    key = (size, tuple(p.shape for p in model.parameters()))
    known = _PIXELS.get(model)
    if known is not None and key in known:
        return known[key]
    area, shape_in = {}, {}

    def hook(mod, x, y):
        area[mod] = y[0].numel() // y.shape[1]
        shape_in[mod] = tuple(x[0].shape[2:])

    forward_zeros(model, size, {m: hook for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))})
    _PIXELS[model] = {key: (area, shape_in)}
    return area, shape_in


class WidthCount:
    """The in/out widths and groups of every conv (and Linear) an inference pass runs; subclasses price one conv
    (``conv_cost``). ``remove`` updates the widths as channels go and returns the cost saved."""

    def __init__(self, model: nn.Module, imgsz: int = 640):
        self.area: dict[nn.Module, int] = {}  # output pixels of each conv (rows of each Linear)
        self.shape_in: dict[nn.Module, tuple] = {}  # input (height, width) of each conv
        self.bn_of: dict[nn.Conv2d, nn.BatchNorm2d] = {}
        self.act_of: dict[nn.Conv2d, bool] = {}  # whether an activation follows the conv (its Conv block's act)

        for m in model.modules():
            conv, bn = getattr(m, "conv", None), getattr(m, "bn", None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                self.bn_of[conv] = bn
                self.act_of[conv] = not isinstance(getattr(m, "act", None), (nn.Identity, type(None)))
        stride = max(int(getattr(model, "stride", torch.tensor([32])).max()), 32)
        self.size = max(stride, int(imgsz) // stride * stride)
        area, shape_in = _pixels(model, self.size)
        self.area, self.shape_in = dict(area), dict(shape_in)
        self.cin = {c: getattr(c, "in_channels", getattr(c, "in_features", 0)) for c in self.area}
        self.cout = {c: getattr(c, "out_channels", getattr(c, "out_features", 0)) for c in self.area}
        self.groups = {c: getattr(c, "groups", 1) for c in self.area}

    def conv_cost(self, c: nn.Module) -> float:
        raise NotImplementedError

    def cost(self) -> float:
        """The summed cost of every conv at the current widths."""
        return sum(self.conv_cost(c) for c in self.area)

    def _touched(self, space) -> tuple[set, list]:
        counted = self.area.keys()
        touched = {m.conv for m, _ in space.producers + space.depthwise} | {c.conv for c in space.consumers}
        changes = [(m.conv, "cout") for m, _ in space.producers + space.depthwise]
        changes += [(m.conv, k) for m, _ in space.depthwise for k in ("cin", "groups")]
        changes += [(c.conv, "cin") for c in space.consumers]
        return touched & counted, [(c, k) for c, k in changes if c in counted]

    def remove(self, space, n: int) -> float:
        """Remove ``n`` channels of ``space`` (a ``graph.Space``) from the width counts; return the cost saved.
        Convs an inference pass never runs (training-only branches: Pose26's sigmas, Proto26's semantic head) cost
        nothing here, as in ultralytics' count."""
        touched, changes = self._touched(space)
        before = sum(self.conv_cost(c) for c in touched)
        for c, key in changes:
            getattr(self, key)[c] -= n
        return before - sum(self.conv_cost(c) for c in touched)

    def remove_block(self, block) -> float:
        """Remove a residual block whole (a ``graph.Block``): its convs run no more, and a C2f-style owner's ``cv2``
        reads one slice of the block's output width less. Returns the cost saved."""
        convs = [c for c in block.module.modules() if c in self.area]
        fold = block.owner.cv2.conv if block.owner is not None else None
        touched = set(convs) | ({fold} & self.area.keys())
        before = sum(self.conv_cost(c) for c in touched)
        width = self.cout[block.out] if block.out in self.area else 0
        for c in convs:
            self.cin[c] = self.cout[c] = 0
        if fold in self.area:
            self.cin[fold] -= width
        return before - sum(self.conv_cost(c) for c in touched)

    def saving(self, space, n: int) -> float:
        """What ``remove(space, n)`` would save, leaving the widths as they are."""
        touched, changes = self._touched(space)
        before = sum(self.conv_cost(c) for c in touched)
        for c, key in changes:
            getattr(self, key)[c] -= n
        after = sum(self.conv_cost(c) for c in touched)
        for c, key in changes:
            getattr(self, key)[c] += n
        return before - after


class FlopsModel(WidthCount):
    """Per-conv FLOPs at ``imgsz`` for the current in/out widths; ``remove`` updates them as channels go."""

    def __init__(self, model: nn.Module, imgsz: int = 640, total: float | None = None):
        """``total``: the model's FLOPs by the reference counter (e.g. ultralytics' ``get_flops`` x 1e9); what
        the per-conv count misses of it is kept as a constant."""
        super().__init__(model, imgsz)
        self.scale = (int(imgsz) / self.size) ** 2  # thop extrapolates from stride-aligned proxies; so does this
        self.initial = self.flops()
        self.total = float(total) if total else self.initial

    def conv_cost(self, c: nn.Module) -> float:
        k = c.kernel_size[0] * c.kernel_size[1] if isinstance(c, nn.Conv2d) else 1
        macs = self.area[c] * self.cout[c] * (self.cin[c] // self.groups[c] * k)
        bn = 4 * self.area[c] * self.cout[c] if c in self.bn_of else 0  # thop: 2 ops per element, x2 if affine
        return 2.0 * (macs + bn) * self.scale

    def flops(self) -> float:
        """FLOPs of every conv (+ its BN) at the current widths."""
        return self.cost()

    def removed(self) -> float:
        """FLOPs saved by every ``remove`` so far."""
        return self.initial - self.flops()


class ConvShape(NamedTuple):
    """What a conv's time depends on besides its widths: kernel, stride, padding, dilation, its groups (0:
    depthwise, the groups follow the widths), its input height and width, the batch and whether an activation
    follows it."""

    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int
    height: int
    width: int
    batch: int
    act: bool


class LayerTimes(Protocol):
    """A conv's time in ms at ``cin`` input and ``cout`` output channels (``cin == cout`` when depthwise), for a
    conv that had ``full`` = (cin, cout) channels when the model was measured."""

    def ms(self, shape: ConvShape, cin: int, cout: int, full: tuple[int, int]) -> float: ...


class LatencyModel(WidthCount):
    """A model's latency at ``imgsz`` as its widths change: ``alpha`` x the summed times of its convs in ``times``
    (at their current widths) + ``beta``. Linear layers are part of ``beta``."""

    def __init__(self, model: nn.Module, imgsz: int, times: LayerTimes, batch: int = 1, alpha: float = 1.0,
                 beta: float = 0.0):
        super().__init__(model, imgsz)
        self.times, self.alpha, self.beta = times, alpha, beta
        self.shapes = {c: conv_shape(c, self.shape_in[c], batch, self.act_of.get(c, False))
                       for c in self.area if isinstance(c, nn.Conv2d)}
        self.full = {c: (self.cin[c], self.cout[c]) for c in self.shapes}
        self.initial = self.cost()
        self.total = self.initial + beta

    def conv_cost(self, c: nn.Module) -> float:
        shape = self.shapes.get(c)
        return 0.0 if shape is None else self.alpha * self.times.ms(shape, self.cin[c], self.cout[c], self.full[c])

    def latency(self) -> float:
        """The predicted latency in ms at the current widths."""
        return self.cost() + self.beta

    def removed(self) -> float:
        """Milliseconds saved by every ``remove`` so far."""
        return self.initial - self.cost()


def conv_shape(conv: nn.Conv2d, hw: tuple, batch: int = 1, act: bool = True) -> ConvShape:
    """The ``ConvShape`` of ``conv`` on an input of height and width ``hw``."""
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels
    return ConvShape(tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation),
                     0 if depthwise else conv.groups, int(hw[0]), int(hw[1]), int(batch), bool(act))


def convs(model: nn.Module, imgsz: int, batch: int = 1) -> dict[nn.Conv2d, ConvShape]:
    """Every conv an inference pass of ``model`` at ``imgsz`` runs, with its ``ConvShape`` (what a latency table
    has to measure)."""
    count = WidthCount(model, imgsz)
    return {c: conv_shape(c, count.shape_in[c], batch, count.act_of.get(c, False))
            for c in count.area if isinstance(c, nn.Conv2d)}

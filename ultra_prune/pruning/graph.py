"""Channel dependency analysis: which output channels of which convs are coupled, and who reads them.

The model's own graph (each layer's ``f`` inputs) is walked with per-module *rules* (``rules.rule_for``).
A rule receives the module and its input ``Signal`` and returns the output ``Signal``, telling the graph what it
does with channels: a conv that produces new channels, a residual add that couples two channel spaces, a concat,
a depthwise conv that passes channels through, or an opaque module whose channels must stay.
A block that cuts a tensor it did not produce (``chunk`` of its input, attention heads, a residual add of a
two-part signal) has the graph ``split`` the spaces at the cut: every holder of a split space then sees its
pieces, and ``tie`` keeps the counts that must stay equal. Residual blocks (``x + f(x)``) a container calls in a
chain are recorded as ``Block``s: the pruner may remove them whole (depth) when widths alone cannot meet a budget.

Knows torch and ultralytics' ``Conv`` layout (``conv``/``bn``/``act``) only; nothing of trainers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import accumulate

import torch
from torch import nn


@dataclass(eq=False)
class Term:
    """One summand of a signal: the output of ``module`` (a Conv with ``bn``/``act``) at channel ``offset``.

    For a depthwise conv, ``inputs`` holds the terms of the signal it reads; its output is then a function of them.
    """

    module: nn.Module
    offset: int
    inputs: tuple = ()

    def constant(self, idx: torch.Tensor) -> torch.Tensor:
        """The constant this term outputs on channels ``idx`` when their BN scale is zero (``act(beta)``).

        For a depthwise conv fed a constant ``v``: ``act(bn(v * sum(W)))``, exact away from padded borders.
        """
        bn, act = self.module.bn, getattr(self.module, "act", nn.Identity())
        j = idx + self.offset
        if not self.inputs:
            return act(bn.bias[j]).detach()
        v = sum(t.constant(idx) for t in self.inputs)
        x = v * self.module.conv.weight[j].sum((1, 2, 3))
        y = (x - bn.running_mean[j]) / torch.sqrt(bn.running_var[j] + bn.eps) * bn.weight[j] + bn.bias[j]
        return act(y).detach()


@dataclass(eq=False)
class Consumer:
    """``conv`` (an nn.Conv2d with groups=1, or an nn.Linear after global pooling) reads a space's channels at input
    channel ``offset``; its summed input there is ``terms``. ``bn`` is the BatchNorm right after it (compensation goes to its running mean), or None
    (compensation goes to the conv's bias)."""

    conv: nn.Conv2d | nn.Linear
    offset: int
    terms: tuple
    bn: nn.BatchNorm2d | None


@dataclass(eq=False)
class Space:
    """A set of ``size`` channels that must be pruned together: every member keeps the same channel indices."""

    size: int
    producers: list = field(default_factory=list)  # (Conv module, offset): out channels + BN
    depthwise: list = field(default_factory=list)  # (Conv module, offset): depthwise in/out channels + BN
    consumers: list = field(default_factory=list)  # Consumer
    fixed: bool = False  # True: an opaque module or the model input/output touches it; never pruned
    reason: str = ""
    parent: Space | None = None
    tie: Space | None = None  # union-find of spaces that must keep equal counts (e.g. C2f's two chunk halves)
    pieces: list = field(default_factory=list)  # after ``ChannelGraph.split``: [(piece, offset)]; then gone

    def root(self) -> Space:
        s = self
        while s.parent is not None:
            s = s.parent
        return s

    def tie_root(self) -> Space:
        s = self.root()
        while s.tie is not None:
            s = s.tie.root()
        return s

    @property
    def prunable(self) -> bool:
        return not self.fixed and bool(self.producers)


@dataclass(eq=False)
class Segment:
    """A run of channels in a signal: all of ``space``, valued as the sum of ``terms``."""

    space: Space
    terms: tuple

    @property
    def size(self) -> int:
        return self.space.root().size


class Signal(list):
    """A tensor's channels as a list of Segments (a concat has several)."""

    @property
    def channels(self) -> int:
        return sum(s.size for s in self)


def shift_terms(terms: tuple, lo: int) -> tuple:
    """The terms of a segment's channels ``lo, lo+1, ...`` (what a space's piece starting at ``lo`` carries)."""
    return tuple(replace(t, offset=t.offset + lo, inputs=shift_terms(t.inputs, lo)) for t in terms)


def _bounds(x: Signal) -> list[int]:
    out, at = [], 0
    for seg in x:
        at += seg.size
        out.append(at)
    return out


@dataclass(eq=False)
class Block:
    """A residual block (``x + f(x)``) that can be removed whole, leaving ``x``: ``module`` at ``index`` of the
    chain ``parent`` (an nn.Sequential, or a C2f-style ``owner``'s ``m`` list, whose ``cv2`` reads the input and
    output of every block concatenated). ``out``: the conv whose output channels are the branch's."""

    module: nn.Module
    parent: nn.Module
    index: int
    out: nn.Conv2d
    owner: nn.Module | None = None

    def hidden(self, spaces: list[Space]) -> list[Space]:
        """The spaces of ``spaces`` that live inside the block: produced and read only by its own convs."""
        inside = set(self.module.modules())
        return [s for s in spaces if s.producers and all(m in inside for m, _ in s.producers + s.depthwise)
                and all(c.conv in inside for c in s.consumers)]


class ChannelGraph:
    """Builds the channel spaces of a model. Rules call the methods below; ``analyse`` walks the model."""

    def __init__(self, rule_for, out_channels: dict):
        self.rule_for = rule_for  # module -> rule callable or None
        self.out_channels = out_channels  # module -> output channels seen in a forward pass
        self.spaces: list[Space] = []
        self.finalizers: list = []  # callables run after surgery (e.g. to update C2f.c)
        self.intact: list[str] = []  # names of modules left intact
        self.residual: dict[nn.Module, nn.Conv2d] = {}  # module computing x + f(x) -> the conv that outputs f
        self.blocks: list[Block] = []  # residual blocks removable whole, in graph order

    # --- spaces -------------------------------------------------------------------------------------------
    def new_space(self, size: int, fixed: bool = False, reason: str = "") -> Space:
        space = Space(size, fixed=fixed, reason=reason)
        self.spaces.append(space)
        return space

    def fixed_signal(self, channels: int, reason: str) -> Signal:
        """A signal of channels nothing may prune (model input, opaque outputs)."""
        return Signal([Segment(self.new_space(channels, True, reason), ())])

    def fix(self, x: Signal, reason: str) -> None:
        """Mark every space of ``x`` unprunable."""
        for seg in self.resolve(x):
            root = seg.space.root()
            if not root.fixed:
                root.fixed, root.reason = True, reason

    def tie(self, a: Space, b: Space) -> None:
        """Require spaces ``a`` and ``b`` to keep equal channel counts (indices may differ)."""
        ra, rb = a.tie_root(), b.tie_root()
        if ra is not rb:
            rb.tie = ra

    def _union(self, a: Space, b: Space) -> Space:
        ra, rb = a.root(), b.root()
        if ra is rb:
            return ra
        rb.parent = ra
        ra.producers += rb.producers
        ra.depthwise += rb.depthwise
        ra.consumers += rb.consumers
        if rb.fixed and not ra.fixed:
            ra.fixed, ra.reason = True, rb.reason
        if rb.tie is not None:
            self.tie(ra, rb.tie)
        return ra

    # --- operations rules use -----------------------------------------------------------------------------
    def consume(self, conv: nn.Conv2d | nn.Linear, x: Signal, bn: nn.BatchNorm2d | None = None) -> None:
        """Record that ``conv`` (groups=1, or a Linear reading globally pooled channels) reads ``x``."""
        offset = 0
        for seg in self.resolve(x):
            seg.space.root().consumers.append(Consumer(conv, offset, seg.terms, bn))
            offset += seg.size

    def conv(self, m: nn.Module, x: Signal, chunks: int = 1) -> Signal:
        """An ultralytics ``Conv`` (conv + bn + act) reading ``x``.

        groups=1: consumes ``x`` and produces ``chunks`` new tied spaces (``chunks=2`` for C2f's ``cv1.chunk(2)``).
        Depthwise (groups == in == out): its channels join the spaces of ``x``. Other grouped convs are opaque.
        """
        conv = m.conv
        if not isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
            return self.opaque(m, x, "conv without BatchNorm (fused?)")
        if conv.groups == 1:
            self.consume(conv, x, m.bn)
            n = conv.out_channels // chunks
            spaces = [self.new_space(n) for _ in range(chunks)]
            for i, s in enumerate(spaces):
                s.producers.append((m, i * n))
                if i:
                    self.tie(spaces[0], s)
            return Signal([Segment(s, (Term(m, i * n),)) for i, s in enumerate(spaces)])
        if conv.groups == conv.in_channels == conv.out_channels and chunks == 1:
            out, offset = Signal(), 0
            for seg in self.resolve(x):
                seg.space.root().depthwise.append((m, offset))
                out.append(Segment(seg.space, (Term(m, offset, seg.terms),)))
                offset += seg.size
            return out
        return self.opaque(m, x, f"grouped conv (groups={conv.groups})")

    def conv2d(self, conv: nn.Conv2d, x: Signal) -> Signal:
        """A bare nn.Conv2d (e.g. a head's final prediction conv): consumes ``x``; its outputs are fixed."""
        if conv.groups != 1:
            return self.opaque(conv, x, "grouped nn.Conv2d")
        self.consume(conv, x)
        return self.fixed_signal(conv.out_channels, "prediction outputs")

    def concat(self, xs: list[Signal]) -> Signal:
        return Signal([seg for x in xs for seg in x])

    def add(self, a: Signal, b: Signal) -> Signal:
        """A residual add: couples the spaces of ``a`` and ``b`` channel by channel."""
        a, b = self.resolve(a), self.resolve(b)
        if len(a) != len(b) or any(sa.size != sb.size for sa, sb in zip(a, b)):
            self.fix(a, "residual add of unaligned signals")
            self.fix(b, "residual add of unaligned signals")
            return self.fixed_signal(a.channels, "residual add of unaligned signals")
        return Signal([Segment(self._union(sa.space, sb.space), sa.terms + sb.terms) for sa, sb in zip(a, b)])

    def opaque(self, m: nn.Module, x, reason: str) -> Signal:
        """A module ultra-prune leaves intact: its inputs are fixed and its outputs are new fixed channels."""
        for xi in x if isinstance(x, list) and x and isinstance(x[0], Signal) else [x]:
            self.fix(xi, f"read by {type(m).__name__}")
        self.intact.append(f"{type(m).__name__} ({reason})")
        return self.fixed_signal(self.out_channels.get(m, 0), f"output of {type(m).__name__}")

    def run(self, m: nn.Module, x):
        """Apply the rule for ``m``; modules without a rule are opaque (left intact, with a warning)."""
        rule = self.rule_for(m)
        return rule(self, m, x) if rule else self.opaque(m, x, "no channel rule")

    def chained(self, parent: nn.Module, index: int, m: nn.Module, owner: nn.Module | None = None) -> None:
        """Record that ``parent`` calls ``m`` (its ``index``-th member) on the running tensor: if ``m`` is a
        residual block (``residual``) it may be removed whole (see ``Block``)."""
        if m in self.residual:
            self.blocks.append(Block(m, parent, index, self.residual[m], owner))

    # --- the whole model ----------------------------------------------------------------------------------
    def analyse(self, model: nn.Module, in_channels: int) -> None:
        """Walk an ultralytics ``BaseModel`` (``model.model`` layers with ``f`` inputs) from its input."""
        outputs: dict[int, Signal] = {}
        x = self.fixed_signal(in_channels, "model input")
        for i, m in enumerate(model.model):
            f = getattr(m, "f", -1)

            def source(j, i=i, x=x):  # as ultralytics' _predict_once: -1 the previous layer, j < 0 layer i + j
                return x if j == -1 else outputs[j if j >= 0 else i + j]

            inp = source(f) if isinstance(f, int) else [source(j) for j in f]
            x = self.run(m, inp)
            outputs[i] = x
        if isinstance(x, Signal):  # a backbone-only model: its output leaves the model
            self.fix(x, "model output")

    def roots(self) -> list[Space]:
        return [s for s in self.spaces if s.parent is None and not s.pieces]

    # --- splitting spaces (a block that chunks a tensor it did not produce: ADown, GhostBottleneck, heads) ------
    def resolve(self, x: Signal) -> Signal:
        """``x`` with every segment of a space that was split since replaced by segments of its pieces."""
        if not any(seg.space.root().pieces for seg in x):
            return x
        out = Signal()
        for seg in x:
            root = seg.space.root()
            if not root.pieces:
                out.append(seg)
                continue
            for piece, lo in root.pieces:
                out.extend(self.resolve(Signal([Segment(piece, shift_terms(seg.terms, lo))])))
        return out

    def _split_root(self, root: Space, cuts: list[int]) -> bool:
        """Split ``root`` into pieces at the channel offsets ``cuts``; every holder of it sees the pieces (through
        ``resolve``). A space tied to others is split with them, piece by piece tied (equal counts per piece keep
        the totals equal). False when that is impossible (tied spaces of different sizes)."""
        cuts = sorted({c for c in cuts if 0 < c < root.size})
        if not cuts:
            return True
        group = [s for s in self.roots() if s.tie_root() is root.tie_root()]
        if any(s.size != root.size for s in group):
            return False
        bounds = [0, *cuts, root.size]
        split = []
        for s in group:
            pieces = []
            for lo, hi in zip(bounds, bounds[1:]):
                p = self.new_space(hi - lo, s.fixed, s.reason)
                p.producers = [(m, o + lo) for m, o in s.producers]
                p.depthwise = [(m, o + lo) for m, o in s.depthwise]
                p.consumers = [Consumer(c.conv, c.offset + lo, shift_terms(c.terms, lo), c.bn) for c in s.consumers]
                pieces.append((p, lo))
            split.append(pieces)
        for s, pieces in zip(group, split):
            s.pieces = pieces
        for i in range(len(bounds) - 1):
            for pieces in split[1:]:
                self.tie(split[0][i][0], pieces[i][0])
        return True

    def split(self, x: Signal, sizes: list[int]) -> list[Signal]:
        """``x`` cut into consecutive signals of ``sizes`` channels (``torch.split``). A segment across a cut has
        its space split there (for every holder); where that is impossible its channels are fixed."""
        x = self.resolve(x)
        if sum(sizes) != x.channels:
            raise ValueError(f"split of {x.channels} channels into {sizes}")
        cuts = list(accumulate(sizes))[:-1]
        while True:
            x, start, again = self.resolve(x), 0, False
            for i, seg in enumerate(x):
                end = start + seg.size
                inner = [c - start for c in cuts if start < c < end]
                if inner:
                    again = True
                    if not self._split_root(seg.space.root(), inner):
                        self.fix(Signal([seg]), "split of a tied space")
                        parts = [b - a for a, b in zip([0, *inner], [*inner, seg.size])]
                        fixed = [s for n in parts for s in self.fixed_signal(n, "split of a tied space")]
                        x = Signal([*x[:i], *fixed, *x[i + 1:]])
                    break
                start = end
            if not again:
                break
        out, seg_iter = [], iter(x)
        for n in sizes:
            part = Signal()
            while part.channels < n:
                part.append(next(seg_iter))
            out.append(part)
        return out

    def align(self, a: Signal, b: Signal) -> tuple[Signal, Signal]:
        """``a`` and ``b`` split at each other's segment boundaries, so that ``add`` pairs them segment by segment."""
        a, b = self.resolve(a), self.resolve(b)
        while a.channels == b.channels and _bounds(a) != _bounds(b):
            cuts = sorted(set(_bounds(a)) | set(_bounds(b)))
            sizes = [hi - lo for lo, hi in zip([0, *cuts], cuts)]
            a = Signal(seg for part in self.split(a, sizes) for seg in part)
            b = Signal(seg for part in self.split(b, sizes) for seg in part)
            a, b = self.resolve(a), self.resolve(b)
        return a, b

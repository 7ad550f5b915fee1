"""Channel surgery: fold removed channels' constant outputs into their consumers, then slice the tensors.

A channel whose BN scale is ~0 outputs the constant ``act(beta)`` (summed over a residual group). Before that
channel is removed, its contribution ``sum_kh,kw W[:, c] * const`` is moved into every consumer: into the running
mean of the BatchNorm after the consumer conv, or into the conv's bias. With gamma exactly 0 the pruned model
matches the original away from zero-padded borders. Residual blocks chosen whole (depth) are taken out last.

The choices (``keep``) are CPU index tensors; every index and mask goes to the device of the tensor it is applied to,
and every new or sliced tensor stays on its module's device, in its memory format (channels_last included).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ultra_prune.pruning.graph import Block, Space


def _keep_mask(size: int, removed_at: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    for offset, removed in removed_at:
        mask[removed.cpu() + offset] = False
    return mask


def _sliced(t: torch.Tensor, out_mask: torch.Tensor | None, in_mask: torch.Tensor | None = None) -> torch.Tensor:
    """A copy of ``t`` with the rows of ``out_mask`` and the columns of ``in_mask`` (None: all), on ``t``'s device
    and in its memory format."""
    channels_last = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    if out_mask is not None:
        t = t[out_mask.to(t.device)]
    if in_mask is not None:
        t = t[:, in_mask.to(t.device)]
    return t.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class Kept(NamedTuple):
    """The rows and columns of its old tensor a sliced parameter kept (CPU masks; None: all of them)."""

    rows: torch.Tensor | None
    cols: torch.Tensor | None

    def of(self, t: torch.Tensor) -> torch.Tensor:
        """``t``, shaped as the old parameter (an optimizer's state of it), sliced the same way."""
        return _sliced(t, self.rows, self.cols)


class Slices(dict):
    """Each new parameter the surgery made -> what it kept of the original parameter (``Kept``)."""

    def replace(self, module: nn.Module, name: str, tensor: torch.Tensor, rows=None, cols=None) -> None:
        """Set ``module.name`` to a new parameter holding ``tensor``, ``rows`` and ``cols`` of the old one kept."""
        old = getattr(module, name)
        before = self.pop(old, None)
        if before is not None:  # sliced again (a block removed after the channels): masks over the original
            rows = before.rows if rows is None else _within(before.rows, rows)
            cols = before.cols if cols is None else _within(before.cols, cols)
        new = nn.Parameter(tensor, requires_grad=old.requires_grad)
        setattr(module, name, new)
        self[new] = Kept(rows, cols)


def _within(first: torch.Tensor | None, then: torch.Tensor) -> torch.Tensor:
    """The mask over the original of keeping ``then`` of what ``first`` kept."""
    if first is None:
        return then
    mask = first.clone()
    mask[first.nonzero().flatten()] = then
    return mask


@torch.no_grad()
def compensate(keep: dict[Space, torch.Tensor]) -> None:
    """Fold the constant outputs of the channels about to be removed into every consumer (in place)."""
    deltas: dict[nn.Conv2d, tuple[torch.Tensor, nn.BatchNorm2d | None]] = {}
    for space, kept in keep.items():
        removed = _removed(space, kept)
        for c in space.consumers:
            const = sum(t.constant(removed) for t in c.terms) if c.terms else None
            if const is None:
                continue
            w = c.conv.weight[:, (c.offset + removed).to(c.conv.weight.device)]
            w = w.sum((2, 3)) if w.dim() == 4 else w  # [out, |removed|] (an nn.Linear consumer is 2-D already)
            d = w.double() @ const.double()  # float64: the fold adds up many terms (1e-4 relative error in float32)
            prev = deltas.get(c.conv, (0, c.bn))[0]
            deltas[c.conv] = (prev + d, c.bn)
    for conv, (d, bn) in deltas.items():
        if bn is not None:
            bn.running_mean.sub_(d.to(bn.running_mean))
        else:
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype,
                                                     device=conv.weight.device))
            conv.bias.add_(d.to(conv.bias))


def _removed(space: Space, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(space.size, dtype=torch.bool)
    mask[kept.cpu()] = False
    return mask.nonzero().flatten()


def _slice_bn(bn: nn.BatchNorm2d, mask: torch.Tensor, slices: Slices) -> None:
    slices.replace(bn, "weight", _sliced(bn.weight.data, mask), mask)
    slices.replace(bn, "bias", _sliced(bn.bias.data, mask), mask)
    bn.running_mean = _sliced(bn.running_mean, mask)
    bn.running_var = _sliced(bn.running_var, mask)
    bn.num_features = int(mask.sum())


@torch.no_grad()
def slice_channels(keep: dict[Space, torch.Tensor], slices: Slices | None = None) -> Slices:
    """Remove every channel not in ``keep`` from producers, depthwise members and consumers (in place); returns
    what each new parameter kept of its old one (added to ``slices`` when given)."""
    slices = Slices() if slices is None else slices
    outs: dict[nn.Conv2d, list] = {}
    ins: dict[nn.Conv2d, list] = {}
    bns: dict[nn.Conv2d, nn.BatchNorm2d] = {}
    depthwise: set[nn.Conv2d] = set()
    for space, kept in keep.items():
        removed = _removed(space, kept)
        for m, offset in space.producers + space.depthwise:
            outs.setdefault(m.conv, []).append((offset, removed))
            bns[m.conv] = m.bn
        for m, offset in space.depthwise:
            depthwise.add(m.conv)
        for c in space.consumers:
            ins.setdefault(c.conv, []).append((c.offset, removed))
    for linear in [c for c in ins if isinstance(c, nn.Linear)]:  # a classifier reading pooled channels
        mask = _keep_mask(linear.in_features, ins.pop(linear))
        slices.replace(linear, "weight", _sliced(linear.weight.data, None, mask), cols=mask)
        linear.in_features = int(mask.sum())
    for conv in outs.keys() | ins.keys():
        out_mask = _keep_mask(conv.out_channels, outs.get(conv, []))
        if conv in depthwise:
            in_mask = None
            conv.groups = int(out_mask.sum())
            conv.in_channels = conv.groups
        else:
            in_mask = _keep_mask(conv.in_channels, ins.get(conv, []))
            conv.in_channels = int(in_mask.sum())
        slices.replace(conv, "weight", _sliced(conv.weight.data, out_mask, in_mask), out_mask, in_mask)
        conv.out_channels = int(out_mask.sum())
        if conv.bias is not None:
            slices.replace(conv, "bias", _sliced(conv.bias.data, out_mask), out_mask)
        if conv in bns:
            _slice_bn(bns[conv], out_mask, slices)
    return slices


@torch.no_grad()
def remove_blocks(blocks: list[Block], slices: Slices | None = None) -> None:
    """Take every residual block of ``blocks`` out of its chain, leaving ``x`` where it computed ``x + f(x)`` (in
    place, after ``slice_channels``, whose ``slices`` it adds to). In a C2f-style owner the block's output slice of
    ``cv2``'s input equals its input slice once the block is gone, so its weights are added to that slice's and the
    slice is removed: the model computes exactly the original with those branches set to zero."""
    slices = Slices() if slices is None else slices
    for b in sorted(blocks, key=lambda b: -b.index):  # later members first: the earlier indices stay valid
        if b.owner is not None:
            conv = b.owner.cv2.conv
            c = conv.in_channels // (2 + len(b.parent))  # cv2 reads [half, half, block 0, block 1, ...]
            at, into = (b.index + 2) * c, (b.index + 1) * c
            w = conv.weight.data.clone()
            w[:, into : into + c] += w[:, at : at + c]
            kept = torch.ones(conv.in_channels, dtype=torch.bool)
            kept[at : at + c] = False
            slices.replace(conv, "weight", _sliced(w, None, kept), cols=kept)
            conv.in_channels -= c
        del b.parent[b.index]

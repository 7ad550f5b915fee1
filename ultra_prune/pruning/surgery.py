"""Channel surgery: fold removed channels' constant outputs into their consumers, then slice the tensors.

A channel whose BN scale is ~0 outputs the constant ``act(beta)`` (summed over a residual group). Before that
channel is removed, its contribution ``sum_kh,kw W[:, c] * const`` is moved into every consumer: into the running
mean of the BatchNorm after the consumer conv, or into the conv's bias. With gamma exactly 0 the pruned model
matches the original away from zero-padded borders. Residual blocks chosen whole (depth) are taken out last.
"""

from __future__ import annotations

import torch
from torch import nn

from ultra_prune.pruning.graph import Block, Space


def _keep_mask(size: int, removed_at: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    for offset, removed in removed_at:
        mask[removed + offset] = False
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
            w = c.conv.weight[:, c.offset + removed]
            w = w.sum((2, 3)) if w.dim() == 4 else w  # [out, |removed|] (an nn.Linear consumer is 2-D already)
            d = w.double() @ const.double()  # float64: the fold adds up many terms (1e-4 relative error in float32)
            prev = deltas.get(c.conv, (0, c.bn))[0]
            deltas[c.conv] = (prev + d, c.bn)
    for conv, (d, bn) in deltas.items():
        if bn is not None:
            bn.running_mean.sub_(d.to(bn.running_mean))
        else:
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.weight.shape[0], dtype=conv.weight.dtype))
            conv.bias.add_(d.to(conv.bias))


def _removed(space: Space, kept: torch.Tensor) -> torch.Tensor:
    mask = torch.ones(space.size, dtype=torch.bool)
    mask[kept] = False
    return mask.nonzero().flatten()


def _slice_bn(bn: nn.BatchNorm2d, mask: torch.Tensor) -> None:
    bn.weight = nn.Parameter(bn.weight.data[mask].clone(), requires_grad=bn.weight.requires_grad)
    bn.bias = nn.Parameter(bn.bias.data[mask].clone(), requires_grad=bn.bias.requires_grad)
    bn.running_mean = bn.running_mean[mask].clone()
    bn.running_var = bn.running_var[mask].clone()
    bn.num_features = int(mask.sum())


@torch.no_grad()
def slice_channels(keep: dict[Space, torch.Tensor]) -> None:
    """Remove every channel not in ``keep`` from producers, depthwise members and consumers (in place)."""
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
        linear.weight = nn.Parameter(linear.weight.data[:, mask].clone(), requires_grad=linear.weight.requires_grad)
        linear.in_features = int(mask.sum())
    for conv in outs.keys() | ins.keys():
        w = conv.weight.data
        out_mask = _keep_mask(conv.out_channels, outs.get(conv, []))
        w = w[out_mask]
        if conv in depthwise:
            conv.groups = int(out_mask.sum())
            conv.in_channels = conv.groups
        else:
            in_mask = _keep_mask(conv.in_channels, ins.get(conv, []))
            w = w[:, in_mask]
            conv.in_channels = int(in_mask.sum())
        conv.weight = nn.Parameter(w.clone(), requires_grad=conv.weight.requires_grad)
        conv.out_channels = int(out_mask.sum())
        if conv.bias is not None:
            conv.bias = nn.Parameter(conv.bias.data[out_mask].clone(), requires_grad=conv.bias.requires_grad)
        if conv in bns:
            _slice_bn(bns[conv], out_mask)


@torch.no_grad()
def remove_blocks(blocks: list[Block]) -> None:
    """Take every residual block of ``blocks`` out of its chain, leaving ``x`` where it computed ``x + f(x)`` (in
    place, after ``slice_channels``). In a C2f-style owner the block's output slice of ``cv2``'s input equals its
    input slice once the block is gone, so its weights are added to that slice's and the slice is removed: the
    model computes exactly the original with those branches set to zero."""
    for b in sorted(blocks, key=lambda b: -b.index):  # later members first: the earlier indices stay valid
        if b.owner is not None:
            conv = b.owner.cv2.conv
            c = conv.in_channels // (2 + len(b.parent))  # cv2 reads [half, half, block 0, block 1, ...]
            at, into = (b.index + 2) * c, (b.index + 1) * c
            w = conv.weight.data.clone()
            w[:, into : into + c] += w[:, at : at + c]
            w = torch.cat([w[:, :at], w[:, at + c :]], 1)
            conv.weight = nn.Parameter(w, requires_grad=conv.weight.requires_grad)
            conv.in_channels -= c
        del b.parent[b.index]

"""Which channels to keep: a global |gamma| threshold over all prunable spaces, with floors and rounding."""

from __future__ import annotations

import math

import torch

from ultra_prune.pruning.graph import Space


def keep_count(n: int, kept: int, round_to: int, floor: int) -> int:
    """Raise ``kept`` to the floor (never below 1) and round it up to a multiple of ``round_to``, capped at ``n``."""
    kept = max(kept, min(floor, n), 1)
    return min(n, math.ceil(kept / round_to) * round_to)


def plan(spaces: list[Space], ratio: float, round_to: int = 8, floor: int = 8) -> dict[Space, torch.Tensor]:
    """Return the sorted channel indices to keep for every prunable space that loses channels.

    The ``ratio`` fraction of all prunable channels with the smallest importance is marked for removal
    (one global ranking), then each space's count is raised to ``floor``, rounded up to ``round_to``, and
    equalised across tied spaces (the largest count wins; a fixed tied space keeps everything).
    """
    prunable = [s for s in spaces if s.prunable]
    if not prunable:
        return {}
    scores = [s.importance() for s in prunable]
    flat = torch.cat(scores)
    n_remove = int(ratio * flat.numel())
    removed = torch.zeros(flat.numel(), dtype=torch.bool)
    removed[torch.argsort(flat, stable=True)[:n_remove]] = True
    counts, start = {}, 0
    for s, sc in zip(prunable, scores):
        counts[s] = keep_count(s.size, int((~removed[start : start + sc.numel()]).sum()), round_to, floor)
        start += sc.numel()
    # equal counts across tied spaces
    need: dict[Space, int] = {}
    for s in spaces:
        t = s.tie_root()
        need[t] = max(need.get(t, 0), s.size if not s.prunable else counts[s])
    keep = {}
    for s, sc in zip(prunable, scores):
        k = min(s.size, need[s.tie_root()])
        if k < s.size:
            keep[s] = torch.sort(torch.topk(sc, k, sorted=False).indices).values
    return keep

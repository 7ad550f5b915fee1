"""Which channels to keep: a global importance threshold over all prunable spaces (``plan``), or the cheapest steps
to a channel or FLOPs target (``select_target``); both with floors and rounding. Importances: ``importance.py``."""

from __future__ import annotations

import heapq
import math

import torch

from ultra_prune.pruning.graph import Space
from ultra_prune.pruning.importance import Importance, layer_relative, magnitude


def keep_count(n: int, kept: int, round_to: int, floor: int) -> int:
    """Raise ``kept`` to the floor (never below 1) and round it up to a multiple of ``round_to``, capped at ``n``."""
    kept = max(kept, min(floor, n), 1)
    return min(n, math.ceil(kept / round_to) * round_to)


def plan(spaces: list[Space], ratio: float, round_to: int = 8, floor: int = 8,
         importance: Importance = magnitude) -> dict[Space, torch.Tensor]:
    """Return the sorted channel indices to keep for every prunable space that loses channels.

    The ``ratio`` fraction of all prunable channels with the smallest ``importance`` is marked for removal
    (one global ranking), then each space's count is raised to ``floor``, rounded up to ``round_to``, and
    equalised across tied spaces (the largest count wins; a fixed tied space keeps everything).
    """
    prunable = [s for s in spaces if s.prunable]
    if not prunable:
        return {}
    scores = [importance(s) for s in prunable]
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


def _units(spaces: list[Space]) -> list[list[Space]]:
    """The spaces grouped by tie (members keep equal counts); a group with a fixed member is left out."""
    groups: dict[Space, list[Space]] = {}
    for s in spaces:
        groups.setdefault(s.tie_root(), []).append(s)
    return [g for g in groups.values() if all(s.prunable for s in g) and len({s.size for s in g}) == 1]


def _steps(n: int, round_to: int, floor: int) -> list[int]:
    """The kept counts a space of ``n`` channels may take, largest first: ``n``, then multiples of ``round_to``
    down to the floor (the same counts ``keep_count`` produces)."""
    low = keep_count(n, 0, round_to, floor)
    top = (n - 1) // round_to * round_to
    return [n] + list(range(top, low - 1, -round_to))


def select_target(spaces: list[Space], target: float, round_to: int = 8, floor: int = 8, flops=None,
                  importance: Importance | None = None, take_dead: bool = False) -> dict[Space, torch.Tensor]:
    """Return the channels to keep so that at least ``target`` of the prunable channels (or, with ``flops``, a
    ``cost.FlopsModel``, of the model's FLOPs) is removed, respecting floors, rounding and ties.

    Channels go in steps: a step takes a tie group from one allowed kept count to the next lower one, removing
    the lowest-importance channels of each member; the step with the smallest mean importance goes first. So
    channels whose importance is 0 (a finished sparse-target run) are removed before any other. Fewer than
    ``target`` is removed only when every group is at its floor. ``take_dead``: also take every further step
    whose channels all have importance 0 (removing them is lossless), so that the channels a sparse-target run
    zeroed are all removed whatever order their steps come in.
    """
    importance = importance or layer_relative
    units = _units(spaces)
    order, score = {}, {}
    for s in (s for u in units for s in u):
        imp = importance(s)
        order[id(s)] = torch.argsort(imp, stable=True)
        score[id(s)] = imp[order[id(s)]]
    total = flops.total if flops is not None else sum(s.size for s in spaces if s.prunable)
    goal = target * total
    kept = {id(u[0]): (u, _steps(max(s.size for s in u), round_to, floor), 0) for u in units}

    def step_score(u, steps, at):
        lo, hi = steps[at + 1], steps[at]
        return sum(score[id(s)][s.size - hi : s.size - lo].sum().item() for s in u) / (len(u) * (hi - lo))

    heap = [(step_score(u, st, 0), i, key) for i, (key, (u, st, _)) in enumerate(kept.items()) if len(st) > 1]
    heapq.heapify(heap)
    removed = 0.0
    while heap and (removed < goal - 1e-9 or (take_dead and heap[0][0] == 0)):
        _, i, key = heapq.heappop(heap)
        u, steps, at = kept[key]
        n = steps[at] - steps[at + 1]
        removed += sum(flops.remove(s, n) if flops is not None else n for s in u)
        kept[key] = (u, steps, at + 1)
        if at + 2 < len(steps):
            heapq.heappush(heap, (step_score(u, steps, at + 1), i, key))
    keep = {}
    for u, steps, at in kept.values():
        for s in u:
            if steps[at] < s.size:
                keep[s] = torch.sort(order[id(s)][s.size - steps[at]:]).values
    return keep

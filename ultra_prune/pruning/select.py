"""Which channels to keep: one selector, ``select``, for every budget (channels, FLOPs, latency).

Channels go in steps. A step takes a tie group (spaces that must keep equal counts) from one allowed kept count to
the next lower one, removing the lowest-importance channels of each member. The allowed counts of a space of ``n``
channels are ``n`` and the multiples of ``round_to`` from below ``n`` down to the floor (``floor`` rounded up, never
below 1). The step whose channels have the smallest mean importance goes first. Under a budget that ``joins``
(``Latency``) a step that saves under ``USEFUL`` of its proportional share of the group's cost is joined to the
next one, so widths a runtime runs no faster at are skipped (ranking by importance per ms saved instead, HALP's
knapsack order, scored lower on held-out mAP at equal latency: benchmarks/README.md). **Ties:** equal step scores
go to the group that comes first in the graph, equal channel scores to the lower channel index.

**Rounding:** steps are taken until the budget's share of its total is removed, so the result removes at least the
budget and at most one step (``round_to`` channels of each member of one group) more; less only when every group is
at its floor. A budget says what a step saves: ``Channels`` counts prunable channels, ``Flops`` the FLOPs of a
``cost.FlopsModel``, ``Latency`` the milliseconds of a ``cost.LatencyModel``.

**Depth:** where every group at its floor still leaves more than a FLOPs or latency budget, ``select_blocks`` picks
residual blocks (``graph.Block``) to remove whole, least important first, until the budget is met. Knows torch only.
"""

from __future__ import annotations

import heapq
import math
from typing import Protocol

import torch

from ultra_prune.pruning.graph import Block, Space
from ultra_prune.pruning.importance import Importance


USEFUL = 0.3  # under a joining budget, a step saving less than this share of its proportional cost joins the next


class Budget(Protocol):
    """What to remove: ``ratio`` of ``total(spaces)``, each step saving ``remove(space, n)``; ``joins``: steps that
    save too little are joined to the next (``saving(space, n)`` says what a step would save)."""

    ratio: float
    joins: bool

    def total(self, spaces: list[Space]) -> float: ...

    def remove(self, space: Space, n: int) -> float: ...


class Channels:
    """``ratio`` of the prunable channels (each space's channels once)."""

    joins = False

    def __init__(self, ratio: float):
        self.ratio = ratio

    def total(self, spaces: list[Space]) -> float:
        return sum(s.size for s in spaces if s.prunable)

    def remove(self, space: Space, n: int) -> float:
        return n


class Flops:
    """``ratio`` of the FLOPs counted by ``cost`` (a ``cost.FlopsModel`` of the model the spaces come from)."""

    joins = False

    def __init__(self, ratio: float, cost):
        self.ratio, self.cost = ratio, cost

    def total(self, spaces: list[Space]) -> float:
        return self.cost.total

    def remove(self, space: Space, n: int) -> float:
        return self.cost.remove(space, n)

    def saving(self, space: Space, n: int) -> float:
        return self.cost.saving(space, n)


class Latency(Flops):
    """``ratio`` of the latency predicted by ``cost`` (a ``cost.LatencyModel``); steps that save too little join."""

    joins = True


def keep_count(n: int, kept: int, round_to: int, floor: int) -> int:
    """Raise ``kept`` to the floor (never below 1) and round it up to a multiple of ``round_to``, capped at ``n``."""
    kept = max(kept, min(floor, n), 1)
    return min(n, math.ceil(kept / round_to) * round_to)


def _units(spaces: list[Space]) -> list[list[Space]]:
    """The spaces grouped by tie (members keep equal counts); a group with a fixed member is left out."""
    groups: dict[Space, list[Space]] = {}
    for s in spaces:
        groups.setdefault(s.tie_root(), []).append(s)
    return [g for g in groups.values() if all(s.prunable for s in g) and len({s.size for s in g}) == 1]


def _steps(n: int, round_to: int, floor: int) -> list[int]:
    """The kept counts a space of ``n`` channels may take, largest first."""
    low = keep_count(n, 0, round_to, floor)
    top = (n - 1) // round_to * round_to
    return [n] + list(range(top, low - 1, -round_to))


def select(spaces: list[Space], budget: Budget, importance: Importance, round_to: int = 8, floor: int = 8,
           take_dead: bool = False) -> dict[Space, torch.Tensor]:
    """The sorted channel indices to keep for every space of ``spaces`` that loses channels, so that at least
    ``budget`` is removed (see the module's rounding and tie rules), lowest ``importance`` first.

    The indices are CPU tensors, whatever device the model is on. ``take_dead``: also take every further step whose channels all score 0 (removing them is lossless: the channels
    a sparse-target run zeroed, whatever order their steps come in; such a step is never joined to the next).
    """
    units = _units(spaces)
    order, score = {}, {}
    for s in (s for u in units for s in u):
        imp = importance(s).cpu()  # the device rule: decided on the CPU, whatever an importance returns
        order[id(s)] = torch.argsort(imp, stable=True)
        score[id(s)] = imp[order[id(s)]]
    quota = budget.ratio * budget.total(spaces)
    at = {i: 0 for i in range(len(units))}
    steps = [_steps(u[0].size, round_to, floor) for u in units]
    joins = getattr(budget, "joins", False)
    share = _shares(units, steps, budget) if joins else {}

    def span(i: int) -> int:
        """How many allowed counts the group's next step goes down (more than 1 when joined)."""
        j = 1
        if joins:
            while at[i] + j + 1 < len(steps[i]):
                n = steps[i][at[i]] - steps[i][at[i] + j]
                if sum(budget.saving(s, n) for s in units[i]) >= USEFUL * share[i] * n:
                    break
                j += 1
        return j

    def mean_score(i: int, j: int) -> float:
        u, lo, hi = units[i], steps[i][at[i] + j], steps[i][at[i]]
        return sum(score[id(s)][s.size - hi : s.size - lo].sum().item() for s in u) / (len(u) * (hi - lo))

    def step_score(i: int) -> tuple[float, int]:
        j = span(i)
        if j > 1 and take_dead and mean_score(i, 1) == 0:  # dead channels go one count at a time, never joined
            return 0.0, 1
        return mean_score(i, j), j

    heap = [(sc, i, j) for i in range(len(units)) if len(steps[i]) > 1 for sc, j in [step_score(i)]]
    heapq.heapify(heap)
    removed = 0.0
    while heap and (removed < quota - 1e-9 or (take_dead and heap[0][0] == 0)):
        sc, i, j = heapq.heappop(heap)
        if joins:  # what a step saves changes as its neighbours shrink: join and score it again (a lazy greedy)
            sc, j = step_score(i)
            if heap and sc > heap[0][0] + 1e-12 and not (take_dead and sc == 0):
                heapq.heappush(heap, (sc, i, j))
                continue
            if removed >= quota - 1e-9 and sc != 0:
                continue
        n = steps[i][at[i]] - steps[i][at[i] + j]
        removed += sum(budget.remove(s, n) for s in units[i])
        at[i] += j
        if at[i] + 1 < len(steps[i]):
            sc, j = step_score(i)
            heapq.heappush(heap, (sc, i, j))
    return _kept(units, steps, at, order)


def _shares(units: list[list[Space]], steps: list[list[int]], budget: Budget) -> dict[int, float]:
    """Under a joining budget: each tie group's cost per channel, from full width to the floor, at the start."""
    share = {}
    for i, u in enumerate(units):
        n = steps[i][0] - steps[i][-1]
        share[i] = sum(budget.saving(s, n) for s in u) / n if n else 0.0
    return share


def _kept(units: list[list[Space]], steps: list[list[int]], at: dict, order: dict) -> dict[Space, torch.Tensor]:
    """The sorted channel indices each space keeps at its group's current allowed count (``steps[i][at[i]]``), for
    the spaces that lose channels; ``order``: each space's channels, least important first."""
    keep = {}
    for i, u in enumerate(units):
        k = steps[i][at[i]]
        for s in u:
            if k < s.size:
                keep[s] = torch.sort(order[id(s)][s.size - k:]).values
    return keep


def select_blocks(spaces: list[Space], keep: dict[Space, torch.Tensor], blocks: list[Block], budget: Flops,
                  importance: Importance) -> list[Block]:
    """The residual blocks to remove whole when ``select``'s ``keep`` (of ``spaces``) still misses a cost budget
    (``Flops`` or ``Latency``, its count left as ``select`` left it): least important first, until the budget is met
    or none is left. A block's importance is the summed importance of the channels its hidden spaces keep; equal
    scores go to the block first in the graph."""
    quota, removed = budget.ratio * budget.cost.total, budget.cost.removed()
    if removed >= quota - 1e-9:
        return []
    scored = []
    for at, b in enumerate(blocks):
        score = sum(float(importance(s).cpu()[keep[s] if s in keep else slice(None)].sum()) for s in b.hidden(spaces))
        scored.append((score, at, b))
    chosen = []
    for _, _, b in sorted(scored, key=lambda t: t[:2]):
        if removed >= quota - 1e-9:
            break
        removed += budget.cost.remove_block(b)
        chosen.append(b)
    return chosen

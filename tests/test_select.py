"""The one selector (``pruning.select.select``) on synthetic channel spaces: its rounding rule (at least the budget,
at most one step more), floors, ties, and that it removes the lowest-scored channels, for a channel and a cost
budget alike."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_prune.pruning.graph import Space
from ultra_prune.pruning.select import Channels, select


class Costs:
    """A budget in arbitrary per-channel costs (like FLOPs: layers cost differently)."""

    def __init__(self, ratio, cost):
        self.ratio, self.cost = ratio, cost

    def total(self, spaces):
        return sum(s.size * self.cost[id(s)] for s in spaces)

    def remove(self, space, n):
        return n * self.cost[id(space)]


class Scores:
    """A fixed importance per space."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = scores

    def bind(self, model):
        return self

    def __call__(self, space):
        return self.scores[id(space)]


def spaces_of(draw, ties: bool):
    """Prunable spaces of random sizes; with ``ties``, some in groups of 2-3 that must keep equal counts."""
    spaces = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(1, 64))
        group = [Space(n, producers=[(None, 0)]) for _ in range(draw(st.integers(2, 3)) if ties and draw(st.booleans()) else 1)]
        for s in group[1:]:
            s.tie = group[0]
        spaces += group
    return spaces


@st.composite
def problems(draw):
    spaces = spaces_of(draw, ties=True)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    scores = {id(s): torch.rand(s.size, generator=g).round(decimals=1) for s in spaces}  # rounded: ties in scores
    costs = {id(s): draw(st.sampled_from([1.0, 2.5, 9.0])) for s in spaces}
    return spaces, scores, costs, draw(st.floats(0.0, 0.95)), draw(st.integers(1, 16)), draw(st.integers(1, 24))


@settings(max_examples=300, deadline=None, database=None)
@given(problem=problems(), by_cost=st.booleans())
def test_select_rounding_floors_ties_and_order(problem, by_cost):
    spaces, scores, costs, ratio, round_to, floor = problem
    budget = Costs(ratio, costs) if by_cost else Channels(ratio)
    keep = select(spaces, budget, Scores(scores), round_to, floor)
    kept = {id(s): len(keep[s]) if s in keep else s.size for s in spaces}
    low = {id(s): min(s.size, -(-max(min(floor, s.size), 1) // round_to) * round_to) for s in spaces}
    removed = sum(budget.remove(s, s.size - kept[id(s)]) for s in spaces)
    goal = ratio * budget.total(spaces)
    step = max(budget.remove(s, round_to) * sum(t.tie_root() is s.tie_root() for t in spaces) for s in spaces)
    if not all(kept[id(s)] == low[id(s)] for s in spaces):  # unless every group is at its floor
        assert removed >= goal - 1e-6
    assert removed < goal + step  # at most one step more than asked
    for s in spaces:
        k = kept[id(s)]
        assert k == s.size or (k % round_to == 0 and k >= low[id(s)])
        assert all(kept[id(t)] == k for t in spaces if t.tie_root() is s.tie_root())  # tie groups keep equal counts
        if s in keep:
            gone = torch.ones(s.size, dtype=torch.bool)
            gone[keep[s]] = False
            assert keep[s].tolist() == sorted(set(keep[s].tolist()))
            if gone.any():  # the lowest-scored channels go
                assert scores[id(s)][gone].max() <= scores[id(s)][~gone].min()


def test_select_breaks_ties_by_graph_order_then_channel_index():
    a, b = Space(16, producers=[(None, 0)]), Space(16, producers=[(None, 0)])
    flat = torch.ones(16)
    keep = select([a, b], Channels(0.25), Scores({id(a): flat, id(b): flat}), round_to=8, floor=1)
    assert list(keep) == [a] and keep[a].tolist() == list(range(8, 16))  # a first, its lowest indices go


def test_select_take_dead_removes_every_zero_step_beyond_the_budget():
    a = Space(32, producers=[(None, 0)])
    scores = torch.cat([torch.zeros(24), torch.ones(8)])
    keep = select([a], Channels(0.0), Scores({id(a): scores}), round_to=8, floor=1, take_dead=True)
    assert keep[a].tolist() == list(range(24, 32))
    assert select([a], Channels(0.0), Scores({id(a): scores}), round_to=8, floor=1) == {}


class Table:
    """A joining budget (like ``Latency``): each space's cost is a table over its width, ``remove`` narrows it."""

    joins = True

    def __init__(self, ratio, cost):
        self.ratio, self.cost, self.width = ratio, cost, {}

    def total(self, spaces):
        return sum(self.cost[s.size] for s in spaces)

    def saving(self, space, n):
        w = self.width.get(id(space), space.size)
        return self.cost[w] - self.cost[w - n]

    def remove(self, space, n):
        saved = self.saving(space, n)
        self.width[id(space)] = self.width.get(id(space), space.size) - n
        return saved


def test_select_take_dead_removes_zero_channels_a_joined_step_would_skip():
    # 32 -> 24 saves nothing on this "runtime", so a latency-like budget joins it to 24 -> 16; the 8 zeroed
    # channels still go (lossless), the live ones of the joined step stay
    a = Space(32, producers=[(None, 0)])
    scores = torch.cat([torch.zeros(8), torch.ones(24)])
    cost = {32: 10.0, 24: 10.0, 16: 4.0, 8: 2.0}
    keep = select([a], Table(0.0, cost), Scores({id(a): scores}), round_to=8, floor=1, take_dead=True)
    assert keep[a].tolist() == list(range(8, 32))
    joined = select([a], Table(0.1, cost), Scores({id(a): scores}), round_to=8, floor=1)
    assert len(joined[a]) == 16  # without dead channels to take, the step is the joined one

"""Sparse training to a target (``sparsity_target=``): the channels the pruner will remove are chosen by its own
dependency analysis and driven to exactly zero on a schedule, whatever the optimizer, learning rate or step count.

The schedule runs on training progress p (0 at the start, 1 at the end):

- until ``observe`` nothing changes: every channel's first-order Taylor score is gathered from the run's own
  gradients; then the first choice is made from them;
- until ``freeze`` the choice is made again at every epoch start (it may move while the network adapts);
- the chosen channels' BatchNorm gamma *and* beta are scaled by a cosine envelope after every optimizer step,
  falling from 1 at ``observe`` to exactly 0 at ``zero``, and are held at 0 from then on (the EMA copy too), so
  the rest of the network trains on without them.

With gamma = beta = 0 a channel outputs ``act(0) = 0`` everywhere, so pruning it is exact, borders included.
No strength is tuned: the envelope is a function of progress, not of the optimizer's step size.

The choice (``chosen``) is made and kept on the CPU (the pruner's device rule); the per-step scaling uses masks
made from it once on each model's device, so a step never waits for the device.

Knows torch and the pruning package only; the trainer glue lives in ``ultra_prune.train.trainer``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ultra_prune.pruning import analyse, budget_for
from ultra_prune.pruning.importance import LayerRelative, Taylor, TaylorScores, Zeroed
from ultra_prune.pruning.select import select



@dataclass(frozen=True)
class Schedule:
    """The schedule's points in training progress (0 at the start, 1 at the end)."""

    observe: float = 0.1  # until here scores are only gathered; the first choice is made then
    freeze: float = 0.3  # after this the chosen channels no longer change
    zero: float = 0.4  # the chosen channels reach exactly zero here (measured: bench_target.py)

    @classmethod
    def zero_at(cls, zero: float) -> Schedule:
        """The schedule moved so the chosen channels reach zero at ``zero``, its other points scaled with it."""
        return cls(zero / 4, 3 * zero / 4, zero)

    def envelope(self, p: float) -> float:
        """The chosen channels' scale at progress ``p``: 1 until ``observe``, then a cosine down to 0 at ``zero``
        and after."""
        x = min(max((p - self.observe) / (self.zero - self.observe), 0.0), 1.0)
        return 0.5 * (1 + math.cos(math.pi * x)) if x < 1 else 0.0


SCHEDULE = Schedule()  # the one a run uses (benchmarks/bench_recipes.py moves it)
OBSERVE, FREEZE, ZERO = SCHEDULE.observe, SCHEDULE.freeze, SCHEDULE.zero
DEAD = 1e-3  # a channel whose group has every |gamma| under this counts as zeroed


def envelope(p: float) -> float:
    """``SCHEDULE.envelope(p)``."""
    return SCHEDULE.envelope(p)


class SparsityTarget:
    """Chooses ``target`` of the prunable channels (``prune_by='channels'``), of the GFLOPs at ``imgsz``
    (``'flops'``) or of the latency (``'latency'``, predicted by ``latency``: see ``pruning.budget_for``), as the
    pruner counts them, and shrinks them to zero on the schedule above."""

    def __init__(self, target: float, prune_by: str = "channels", round_to: int = 8, floor: int = 8,
                 imgsz: int = 640, latency=None):
        self.target, self.prune_by, self.round_to, self.floor, self.imgsz = target, prune_by, round_to, floor, imgsz
        self.latency = latency
        self.chosen: dict[str, torch.Tensor] = {}  # BatchNorm module name -> channel indices to zero
        self.schedule = SCHEDULE  # taken when the run starts
        self.scale = 1.0  # the envelope value last applied
        self.taylor = TaylorScores()  # BatchNorm module name -> accumulated first-order scores
        self._masks: dict[int, tuple] = {}  # id(model) -> (model, its chosen BatchNorms, their masks on its device)

    def observe(self, model: nn.Module, grad_scale: float | torch.Tensor = 1.0) -> None:
        """Accumulate each BatchNorm channel's first-order Taylor score ``|gamma*dL/dgamma + beta*dL/dbeta|``: the
        loss change, to first order, of setting the channel's gamma and beta to 0 (Molchanov et al., 2019).
        Call it with the gradients of a step in place (``grad_scale``: the AMP loss scale they still carry)."""
        self.taylor.observe(model, grad_scale)

    def choose(self, model: nn.Module) -> None:
        """Choose the channels to zero with the pruner's analysis and selection (zeroed ones stay chosen)."""
        graph = analyse(model)
        names = {m: n for n, m in model.named_modules()}
        budget = budget_for(self.prune_by, self.target, model, self.imgsz, self.latency)
        # Taylor scores once observed (loss changes, so they compare across layers), else |gamma| relative to the
        # layer's mean
        importance = Taylor(self.taylor).bind(model) if self.taylor else LayerRelative()
        keep = select(graph.roots(), budget, importance, self.round_to, self.floor, take_dead=True)
        self.taylor = TaylorScores()
        chosen: dict[str, list[torch.Tensor]] = {}
        for space, kept in keep.items():
            mask = torch.ones(space.size, dtype=torch.bool)
            mask[kept] = False
            removed = mask.nonzero().flatten()
            for m, offset in space.producers + space.depthwise:
                chosen.setdefault(names[m.bn], []).append(removed + offset)
        self.chosen = {n: torch.cat(ix).unique() for n, ix in chosen.items()}
        self._masks = {}

    def chosen_count(self) -> int:
        return sum(len(ix) for ix in self.chosen.values())

    def zeroed(self) -> bool:
        """Whether the chosen channels are at exactly zero (the schedule has passed ``zero``)."""
        return bool(self.chosen) and self.scale == 0

    def _chosen_masks(self, model: nn.Module) -> tuple[list[nn.BatchNorm2d], list[torch.Tensor]]:
        """``model``'s BatchNorms with chosen channels, and a mask of those channels on each one's device (made once
        per choice and model)."""
        held, bns, masks = self._masks.get(id(model), (None, None, None))
        if held is not model:
            modules = dict(model.named_modules())
            bns = [modules[name] for name in self.chosen]
            masks = []
            for bn, idx in zip(bns, self.chosen.values()):
                mask = torch.zeros(bn.num_features, dtype=torch.bool)
                mask[idx] = True
                masks.append(mask.to(bn.weight.device))
            self._masks[id(model)] = (model, bns, masks)
        return bns, masks

    @torch.no_grad()
    def _scale(self, models: list[nn.Module], factor: float) -> None:
        """Multiply the chosen channels' gamma and beta by ``factor``: dense ops on the device, no sync."""
        for model in models:
            bns, masks = self._chosen_masks(model)
            for bn, mask in zip(bns, masks):
                by = torch.where(mask, factor, 1.0)
                bn.weight.mul_(by)
                bn.bias.mul_(by)

    def step(self, models: list[nn.Module], progress: float) -> None:
        """After an optimizer step: scale the chosen channels of ``models`` (the model and its EMA) along the
        envelope; past ``zero`` set them to exactly 0."""
        new = self.schedule.envelope(progress)
        factor = 0.0 if new == 0 else new / max(self.scale, 1e-12)
        self.scale = new
        if factor != 1.0:
            self._scale(models, factor)

    def reached(self, model: nn.Module) -> float:
        """The share of prunable channels (or of GFLOPs, or latency) that pruning ``model``'s zeroed channels
        removes."""
        roots = analyse(model).roots()
        budget = budget_for(self.prune_by, 0.0, model, self.imgsz, self.latency)
        keep = select(roots, budget, Zeroed(DEAD), self.round_to, self.floor, take_dead=True)
        if self.prune_by != "channels":
            return budget.cost.removed() / budget.cost.total
        prunable = sum(s.size for s in roots if s.prunable)
        return sum(s.size - len(k) for s, k in keep.items()) / max(prunable, 1)

    def groups(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """|gamma| of ``model``'s chosen channels and of all the others, as two CPU vectors (for histograms)."""
        chosen, rest = [], []
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine:
                g = m.weight.detach().abs().float().cpu()
                mask = torch.zeros(g.numel(), dtype=torch.bool)
                if name in self.chosen:
                    mask[self.chosen[name]] = True
                chosen.append(g[mask])
                rest.append(g[~mask])
        return torch.cat(chosen) if chosen else torch.zeros(0), torch.cat(rest) if rest else torch.zeros(0)

"""Channel importances: how much each channel of a space matters (higher = keep), behind one protocol: an
importance is a callable ``(space) -> Tensor`` with a ``name``.

- ``Magnitude`` (``l1``): the largest BN |gamma| over the group (network slimming's ranking; compares across layers
  once sparse training has split the scales);
- ``LayerRelative`` (``relative``): |gamma| over its layer's mean;
- ``Taylor`` (``taylor``): first-order Taylor scores ``|gamma*dL/dgamma + beta*dL/dbeta|`` summed over the group's
  BatchNorms, the loss change of zeroing a channel (Molchanov et al., 2019), gathered from real gradients
  (``TaylorScores``);
- ``Zeroed`` (``zeroed``): 0 for the channels a sparse-target run drove to exactly zero, 1 for the others.

``select.select`` takes any of them; the user's word is turned into one of them once, at the API layer. Knows torch
only.

**Device rule:** the pruner decides on the CPU. An importance returns a CPU tensor whatever device the model is on;
gathered Taylor scores stay on the model's device while training runs (no host-device sync per step) and are copied
to the CPU where a choice is made.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from ultra_prune.pruning.graph import Space


class Importance(Protocol):
    """Scores each channel of a space (higher = keep). ``bind`` gives the importance for the spaces of ``model``
    (the one a pruning analyses; most importances need nothing of it and return themselves)."""

    name: str

    def bind(self, model: nn.Module) -> Importance: ...

    def __call__(self, space: Space) -> torch.Tensor: ...


def gamma_magnitude(space: Space) -> torch.Tensor:
    """The largest |gamma| over every BatchNorm of the space, per channel (a CPU tensor)."""
    gammas = [m.bn.weight.detach()[o : o + space.size].abs().float().cpu() for m, o in space.producers + space.depthwise]
    return torch.stack(gammas).amax(0)


class _Unbound:
    def bind(self, model: nn.Module):
        return self


class Magnitude(_Unbound):
    """The largest BN |gamma| over the group."""

    name = "l1"

    def __call__(self, space: Space) -> torch.Tensor:
        return gamma_magnitude(space)


class LayerRelative(_Unbound):
    """|gamma| / the space's mean |gamma| (dead channels stay 0).

    Raw |gamma| compares scales across layers, which means something only once sparse training has split them;
    relative to its own layer, every space's channels average 1, so a global ranking prunes layers evenly unless
    their scales are spread.
    """

    name = "relative"

    def __call__(self, space: Space) -> torch.Tensor:
        imp = gamma_magnitude(space)
        return imp / imp.mean().clamp_min(1e-12)


class Zeroed(_Unbound):
    """0 for channels whose |gamma| is at most ``tol`` in every BatchNorm of the group, else 1: with a budget of 0
    and ``take_dead``, the selector removes exactly those."""

    name = "zeroed"

    def __init__(self, tol: float = 0.0):
        self.tol = tol

    def __call__(self, space: Space) -> torch.Tensor:
        return (gamma_magnitude(space) > self.tol).float()


class TaylorScores(dict):
    """BatchNorm module name -> accumulated first-order Taylor scores of its channels (on the model's device)."""

    @torch.no_grad()
    def observe(self, model: nn.Module, grad_scale: float | torch.Tensor = 1.0) -> None:
        """Add each BatchNorm channel's ``|gamma*dL/dgamma + beta*dL/dbeta|`` from the gradients now in place
        (``grad_scale``: the AMP loss scale they still carry, a number or a tensor on the model's device). A
        BatchNorm whose scores are not all finite (an AMP overflow) adds nothing; nothing here waits for the
        device."""
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine and m.weight.grad is not None and m.bias.grad is not None:
                s = (m.weight * m.weight.grad + m.bias * m.bias.grad).abs().float() / grad_scale
                s = torch.where(torch.isfinite(s).all(), s, torch.zeros_like(s))
                self[name] = self[name] + s if name in self else s

    def to(self, device: torch.device) -> TaylorScores:
        """The same scores on ``device``."""
        return TaylorScores({k: v.to(device) for k, v in self.items()})


class Taylor:
    """Taylor scores of a model's channels, summed over each group's BatchNorms (found by module name, so a copy of
    the scored model works too); a channel whose |gamma| is 0 everywhere stays 0."""

    name = "taylor"

    def __init__(self, scores: TaylorScores, names: dict | None = None):
        self.scores, self.names = scores, names or {}

    def bind(self, model: nn.Module) -> Taylor:
        return Taylor(self.scores, {m: n for n, m in model.named_modules()})

    def __call__(self, space: Space) -> torch.Tensor:
        """The group's summed scores (a CPU tensor)."""
        bns = [(self.names[m.bn], o) for m, o in space.producers + space.depthwise]
        scores = [self.scores[n][o : o + space.size].cpu() if n in self.scores else torch.zeros(space.size)
                  for n, o in bns]
        return torch.stack(scores).sum(0) * (gamma_magnitude(space) > 0)


NAMED = {cls.name: cls for cls in (Magnitude, LayerRelative)}  # the importances that need no data, by their names

"""Channel importances: how much a space's channels matter, per channel (higher = keep).

- ``magnitude``: the largest BN |gamma| over the group (network slimming's ranking; compares across layers once
  sparse training has split the scales);
- ``layer_relative``: |gamma| over its layer's mean;
- ``taylor``: first-order Taylor scores ``|gamma*dL/dgamma + beta*dL/dbeta|`` summed over the group's BatchNorms,
  the loss change of zeroing a channel (Molchanov et al., 2019), gathered from real gradients (``TaylorScores``).

``select.plan`` / ``select.select_target`` take any of them. Knows torch only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ultra_prune.pruning.graph import Space

Importance = Callable[[Space], torch.Tensor]


def magnitude(space: Space) -> torch.Tensor:
    """The largest |gamma| over every BatchNorm of the space."""
    return space.importance()


def layer_relative(space: Space) -> torch.Tensor:
    """Importance relative to the space's mean: |gamma| / mean |gamma| (dead channels stay 0).

    Raw |gamma| compares scales across layers, which means something only once sparse training has split them;
    relative to its own layer, every space's channels average 1, so a global ranking prunes layers evenly
    unless their scales are spread.
    """
    imp = space.importance()
    return imp / imp.mean().clamp_min(1e-12)


class TaylorScores(dict):
    """BatchNorm module name -> accumulated first-order Taylor scores of its channels."""

    @torch.no_grad()
    def observe(self, model: nn.Module, grad_scale: float = 1.0) -> None:
        """Add each BatchNorm channel's ``|gamma*dL/dgamma + beta*dL/dbeta|`` from the gradients now in place
        (``grad_scale``: the AMP loss scale they still carry; a step with inf/nan gradients is skipped)."""
        for name, m in model.named_modules():
            if isinstance(m, nn.BatchNorm2d) and m.affine and m.weight.grad is not None and m.bias.grad is not None:
                s = (m.weight * m.weight.grad + m.bias * m.bias.grad).abs().float() / grad_scale
                if torch.isfinite(s).all():
                    self[name] = self[name] + s if name in self else s.clone()

    def importance(self, model: nn.Module) -> Importance:
        """The Taylor importance of the spaces of ``model`` (scored under the same module names): the scores
        summed over the group's BatchNorms; a channel whose |gamma| is 0 everywhere stays 0."""
        names = {m: n for n, m in model.named_modules()}

        def taylor(space: Space) -> torch.Tensor:
            bns = [(names[m.bn], o) for m, o in space.producers + space.depthwise]
            scores = [self[n][o : o + space.size].cpu() if n in self else torch.zeros(space.size) for n, o in bns]
            return torch.stack(scores).sum(0) * (space.importance() > 0)

        return taylor


def zeroed(space: Space) -> torch.Tensor:
    """0 for channels whose |gamma| is exactly 0 in every BatchNorm of the group (a finished sparse-target run's),
    else 1: with a target of 0 and ``take_dead``, the selector removes exactly those."""
    return (space.importance() > 0).float()


IMPORTANCES = {"l1": magnitude, "relative": layer_relative, "zeroed": zeroed}  # the ones that need no data

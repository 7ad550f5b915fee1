"""Sparse (network-slimming) training: the L1 penalty on BatchNorm scales, as a gradient term or a proximal step.

Knows torch only. The trainer glue lives in ``ultra_prune.train.trainer``.
"""

from __future__ import annotations

import torch
from torch import nn

THRESHOLDS = (1e-2, 1e-3)


def batchnorm_params(model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return the weights (gamma) and biases (beta) of every affine BatchNorm2d in ``model``."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.affine]
    return [m.weight for m in bns], [m.bias for m in bns]


def stats_of(g: torch.Tensor) -> dict[str, float]:
    """Mean and the fraction under each of THRESHOLDS of a vector ``g`` of |gamma| values."""
    if not g.numel():
        return {}
    stats = {"sparsity/gamma_mean": g.mean().item()}
    stats.update({f"sparsity/gamma<{t:g}": (g < t).float().mean().item() for t in THRESHOLDS})
    return stats


def gamma_stats(model: nn.Module) -> dict[str, float]:
    """Mean |gamma| and the fraction of |gamma| under each of THRESHOLDS, over every BatchNorm2d of ``model``."""
    return stats_of(gamma_values(model))


def gamma_values(model: nn.Module) -> torch.Tensor:
    """All |gamma| of ``model`` as one CPU vector (for histograms)."""
    gammas, _ = batchnorm_params(model)
    return torch.cat([p.detach().abs().flatten().float().cpu() for p in gammas]) if gammas else torch.zeros(0)


class BNSparsity:
    """L1 regularisation of BatchNorm2d gamma (strength ``lam``) and beta (``lam_beta``) with a linear decay.

    The strength at epoch e of E is ``lam * (1 - (1 - decay) * e / E)``. Parameters are collected once per model
    object and updated with foreach ops, so the per-step cost is a few fused kernels.
    """

    def __init__(self, lam: float, lam_beta: float = 0.0, decay: float = 0.1, epochs: int = 1):
        self.lam, self.lam_beta, self.decay, self.epochs = float(lam), float(lam_beta), float(decay), max(int(epochs), 1)
        self._model_id = None
        self._gammas: list[torch.Tensor] = []
        self._betas: list[torch.Tensor] = []
        self._optimizer_key = None
        self._groups: list = []

    def factor(self, epoch: int) -> float:
        """The fraction of the initial strength in force at ``epoch`` (0-based)."""
        return 1.0 - (1.0 - self.decay) * min(epoch, self.epochs) / self.epochs

    def bind(self, model: nn.Module) -> None:
        """Collect the BatchNorm parameters of ``model`` (again only when it is a different model)."""
        if id(model) != self._model_id:
            self._gammas, self._betas = batchnorm_params(model)
            self._model_id = id(model)

    def _pairs(self, epoch: int):
        f = self.factor(epoch)
        return [(ps, lam * f) for ps, lam in ((self._gammas, self.lam), (self._betas, self.lam_beta)) if lam and ps]

    @torch.no_grad()
    def add_l1_grad(self, model: nn.Module, epoch: int, scale: float | torch.Tensor = 1.0) -> None:
        """Add ``scale * lam_e * sign(p)`` to each gamma/beta gradient.

        ``scale`` is the AMP loss scale when the gradients are still scaled (a tensor on the device under AMP,
        never read on the host), so that after unscaling the gradient is exactly ``g + lam_e * sign(p)``.
        """
        self.bind(model)
        for params, lam in self._pairs(epoch):
            live = [p for p in params if p.grad is not None]
            if not live:
                continue
            signs = torch._foreach_sign(live)
            if isinstance(scale, torch.Tensor):
                torch._foreach_mul_(signs, scale)
                torch._foreach_add_([p.grad for p in live], signs, alpha=lam)
            else:
                torch._foreach_add_([p.grad for p in live], signs, alpha=lam * scale)

    @torch.no_grad()
    def soft_threshold(self, params: list[torch.Tensor], amount: float) -> None:
        """Proximal L1 step: ``p <- sign(p) * max(|p| - amount, 0)`` for every tensor in ``params``."""
        if not params or amount <= 0:
            return
        mags = torch._foreach_abs(params)
        torch._foreach_sub_(mags, amount)
        torch._foreach_clamp_min_(mags, 0.0)
        torch._foreach_mul_(mags, torch._foreach_sign(params))
        torch._foreach_copy_(params, mags)

    @torch.no_grad()
    def polarize(self, params: list[torch.Tensor], amount: float) -> None:
        """Polarising proximal step: per tensor (one BN layer), entries with |p| under the layer's mean |p| are
        soft-thresholded by ``2 * amount``, the others are left alone.

        This is the prox of the polarisation regulariser ``t*|p| - |p - mean(p)|`` at t=1 (Zhuang et al., 2020):
        plain L1 shrinks a layer's scales together (BatchNorm makes that nearly free for the loss), while this
        splits them into a group driven to exactly 0 and a group that keeps its scale.
        """
        if not params or amount <= 0:
            return
        mags = torch._foreach_abs(params)
        means = [m.mean() for m in mags]
        shrink = [(m < mu).to(m.dtype) * (2 * amount) for m, mu in zip(mags, means)]
        torch._foreach_sub_(mags, shrink)
        torch._foreach_clamp_min_(mags, 0.0)
        torch._foreach_mul_(mags, torch._foreach_sign(params))
        torch._foreach_copy_(params, mags)

    @torch.no_grad()
    def proximal_step(self, optimizer: torch.optim.Optimizer, epoch: int, polar: bool = False,
                      skip: torch.Tensor | None = None) -> None:
        """Soft-threshold gamma (and beta) by their parameter group's learning rate times lam_e
        (``polar``: the polarising variant for gamma, see ``polarize``). ``skip``: a device flag (an AMP step's
        ``found_inf``); where it is set the parameters keep their values, decided on the device."""
        if (id(optimizer), self._model_id) != self._optimizer_key:
            gammas, betas = {id(p) for p in self._gammas}, {id(p) for p in self._betas}
            self._groups = [
                (g, [p for p in g["params"] if id(p) in gammas], [p for p in g["params"] if id(p) in betas])
                for g in optimizer.param_groups
            ]
            self._optimizer_key = (id(optimizer), self._model_id)
        f = self.factor(epoch)
        shrink_gamma = self.polarize if polar else self.soft_threshold
        params = [p for _, gammas, betas in self._groups for p in gammas + betas]
        before = [p.detach().clone() for p in params] if skip is not None else None
        for group, gammas, betas in self._groups:
            shrink_gamma(gammas, group["lr"] * self.lam * f)
            self.soft_threshold(betas, group["lr"] * self.lam_beta * f)
        if before is not None:
            for p, b in zip(params, before):
                p.copy_(torch.where(skip.bool(), b, p))

"""The model a slim run trains: a pruned checkpoint as itself (never rebuilt from its yaml), with fresh class convs
when the data has another class count, or the stock model pruned first (one-shot ``prune=``). Knows torch and the
pruning package; the trainer glue lives in ``ultra_prune.train.trainer``."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn


WRAPPERS = (nn.parallel.DistributedDataParallel, nn.DataParallel)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside its DDP / DataParallel (``module``) and torch.compile (``_orig_mod``) wrappers, however
    they are nested."""
    while True:
        inner = model.module if isinstance(model, WRAPPERS) else getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def reset_classes(model: nn.Module, nc: int) -> None:
    """Give a detection-style model (detect, segment, pose, obb) ``nc`` classes: new, freshly initialised class
    convs (and Proto26's semantic-segmentation conv); everything else kept."""
    head = model.model[-1]
    semantic = getattr(getattr(head, "proto", None), "semseg", None)
    if semantic is not None:
        semantic[-1] = nn.Conv2d(semantic[-1].in_channels, nc, 1)
    for name in ("cv3", "one2one_cv3"):
        for i, branch in enumerate(getattr(head, name, None) or []):
            old = branch[-1]
            new = nn.Conv2d(old.in_channels, nc, old.kernel_size, old.stride, bias=True)
            s = float(head.stride[i]) if head.stride.numel() > i and float(head.stride[i]) > 0 else 8.0 * 2**i
            nn.init.constant_(new.bias, torch.log(torch.tensor(5 / nc / (640 / s) ** 2)).item())
            branch[-1] = new
    head.nc, head.no = nc, nc + head.reg_max * 4
    model.nc = nc
    if isinstance(getattr(model, "yaml", None), dict):
        model.yaml["nc"] = nc


def trainable_copy(pruned: nn.Module) -> nn.Module:
    """A float copy of ``pruned`` whose parameters all train (a saved checkpoint has them frozen and in fp16)."""
    model = copy.deepcopy(pruned).float()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@contextlib.contextmanager
def rank_zero_first():
    """Under DDP, rank 0 runs the block before the other ranks do, and hands them its latency measurements
    (``latency.share_measurements``), so every rank finds them cached and chooses the same channels; a single
    process just runs it."""
    from ultra_prune.latency.table import share_measurements

    dist = torch.distributed.is_available() and torch.distributed.is_initialized()
    first = not dist or torch.distributed.get_rank() == 0
    if not first:
        share_measurements()
    yield
    if dist and first:
        share_measurements()


def broadcast_weights(model: nn.Module, device) -> None:
    """Give every DDP rank rank 0's weights. They travel on ``device``, the rank's training device (NCCL takes only
    tensors on the rank's GPU), and land in ``model`` wherever it is."""
    for tensor in model.state_dict().values():
        sent = tensor.to(device)
        torch.distributed.broadcast(sent, 0)
        tensor.copy_(sent)


def prune_for_training(model: nn.Module, cfg, data, device, verbose: bool = True):
    """One-shot ``prune=``: ``(pruned model, report)`` of ``model`` pruned by the engine with the run's settings
    ``cfg`` (a ``PruneConfig``; Taylor scores from ``data`` by default), or ``(model, None)`` when nothing can go.
    Under DDP every rank scores rank 0's weights (a yaml model is initialised per rank), so all prune alike."""
    from ultra_prune.engine.once import announce, prune_once

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        broadcast_weights(model, device)
    with rank_zero_first() if cfg.by == "latency" else contextlib.nullcontext():
        pruned, report = prune_once(model, cfg, data, device=device, verbose=verbose)
    if pruned is None:
        return model, None
    if verbose:
        announce(report)
    return pruned, report


def write_pruned(pruned: nn.Module, report, trainer) -> None:
    """Save the one-shot prune's model as ``weights/pruned.pt`` and its report as ``prune_report.txt``/``.json`` in
    ``trainer``'s run folder (a callback, so a DDP worker can run it after the launch cleared that folder)."""
    from ultralytics.utils import RANK

    from ultra_prune.io.checkpoint import save_model

    if RANK in {-1, 0}:
        report.output = str(save_model(pruned, trainer.wdir / "pruned.pt", exist_ok=True))
        report.save(trainer.save_dir / "prune_report.txt")
        report.save(trainer.save_dir / "prune_report.json")


def swap_parameters(optimizer, old: nn.Module, new: nn.Module, sliced: dict | None = None) -> None:
    """Point ``optimizer`` at ``new``'s parameters in place of ``old``'s (same names; ``new`` a pruned copy), keeping
    its groups, learning rates and schedule. The state (momentum, Adam moments and step count) of a sliced parameter
    is sliced as the parameter was (``sliced``: name -> ``surgery.Kept``, as ``prune_model`` reports it); a
    reshaped parameter not in ``sliced`` starts afresh."""
    by_name = dict(new.named_parameters())
    name_of = {id(p): n for n, p in old.named_parameters()}
    sliced = sliced or {}
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            name = name_of[id(p)]
            q = by_name[name]
            state = optimizer.state.pop(p, None)
            if state is not None and q.shape != p.shape:
                kept = sliced.get(name)
                state = None if kept is None else {k: kept.of(v) if _shaped_as(v, p) else v for k, v in state.items()}
            if state is not None:
                optimizer.state[q] = state
            params.append(q)
        group["params"] = params


def _shaped_as(value, p: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == p.shape


@contextlib.contextmanager
def without_criterion(model: nn.Module):
    """``model`` with its criterion attribute (a teacher inside, perhaps) taken off for the block, so a copy made
    there has none and builds its own when first asked for a loss (ultralytics 8.2 checks that the attribute
    exists, 8.4 that it is not None)."""
    criterion = vars(model).pop("criterion", None)
    try:
        yield model
    finally:
        if criterion is not None:
            model.criterion = criterion


def replace_pruned(trainer, prune_copy) -> dict | None:
    """Replace ``trainer``'s model and its EMA by ``prune_copy(model)`` and ``prune_copy(ema)`` (each
    ``(pruned copy, info)`` as ``prune_model`` returns) in the middle of a run: the optimizer is pointed at the new
    parameters with its schedule kept, the EMA is rebuilt around the new model, and training goes on with the
    smaller one. Returns the model's ``info``; None (nothing replaced) when nothing was removed or the two would
    have different widths."""
    model, ema = unwrap(trainer.model), trainer.ema.ema
    with without_criterion(model):
        new, info = prune_copy(model)
    with without_criterion(ema):
        new_ema, ema_info = prune_copy(ema)
    if not info.pruned or info.widths_after != ema_info.widths_after:
        return None
    new.to(next(model.parameters()).device).train(model.training)
    swap_parameters(trainer.optimizer, model, new, info.sliced)
    ema = type(trainer.ema)(new, updates=trainer.ema.updates)  # as ultralytics' own resume rebuilds it
    ema.ema.load_state_dict(new_ema.state_dict())
    trainer.model, trainer.ema = new, ema
    return info


def remove_zeroed(trainer, prune_by: str, round_to: int, floor: int, imgsz: int, latency=None) -> dict | None:
    """Remove the channels a ``sparsity_target`` run holds at exactly zero from ``trainer``'s model and its EMA, in
    the middle of the run (``replace_pruned``; exact: a channel with gamma = beta = 0 outputs nothing). Returns the
    pruning's ``info`` (None when nothing was removed, or the two models would differ)."""
    from ultra_prune.pruning import prune_model
    from ultra_prune.pruning.importance import Zeroed

    return replace_pruned(trainer, lambda m: prune_model(m, 0.0, round_to, floor, prune_by, imgsz, take_dead=True,
                                                         importance=Zeroed(), latency=latency))

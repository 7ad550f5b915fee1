"""Network-slimming channel pruning of ultralytics models (detect, segment, pose, obb, classify).

``prune_model`` = checks -> dependency analysis (``graph`` + ``rules``) -> selection (``select``: a budget, ranked
by an ``importance``; with ``depth``, whole residual blocks where the floors stop it) -> surgery (``surgery``). The
result is made only of stock ultralytics classes and carries a small ``ultra_prune`` marker dict (its history and
widths); what changed comes back typed (``record``). Importing this package changes nothing in ultralytics; it
validates no user argument (``ultra_prune.config`` has) and knows no CLI key.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning.cost import FlopsModel
from ultra_prune.pruning.graph import ChannelGraph
from ultra_prune.pruning.importance import Importance, Magnitude
from ultra_prune.pruning.probe import forward_zeros, input_channels
from ultra_prune.pruning.record import MARKER, Pruning, HistoryEntry, is_pruned
from ultra_prune.pruning.rules import rule_for
from ultra_prune.pruning.select import Budget, Channels, Flops, Latency, select, select_blocks
from ultra_prune.pruning.surgery import Slices, compensate, remove_blocks, slice_channels

def check_prunable(model: nn.Module) -> None:
    """Raise UltraPruneError unless ``model`` is an unfused ultralytics model with BatchNorm layers whose head has a
    channel rule (detect, segment, pose, obb and classify heads; plugins may add others)."""
    from ultralytics.nn.tasks import guess_model_task

    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "model", None), nn.Sequential):
        raise UltraPruneError(f"expected an ultralytics model (e.g. a DetectionModel), got {type(model).__name__}")
    head = model.model[-1]
    if rule_for(head) is None:
        yaml = getattr(model, "yaml", None)  # the architecture, not checkpoint args (which default task to 'detect')
        task = (guess_model_task(yaml) if isinstance(yaml, dict) else None) or guess_model_task(model)
        raise UltraPruneError(
            f"task '{task}' ({type(model).__name__} with a {type(head).__name__} head) is not supported by the "
            f"pruner: it has no channel rule for {type(head).__name__}; prune a detect, segment, pose, obb or "
            "classify model (e.g. yolov8n.yaml, yolov8n-seg.yaml, yolov8n-cls.yaml)"
        )
    # a fused Conv lost its bn; blocks whose ``conv`` is itself a Conv (RepVGGDW, yolov10) have no bn of their own
    if any(isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "forward_fuse") and not hasattr(m, "bn")
           for m in model.modules()):
        raise UltraPruneError(
            "the model is fused (BatchNorm folded into the convs by fuse(), e.g. after predict/val), so the BN "
            "scales pruning ranks are gone; load the unfused checkpoint from disk (YOLO('x.pt')) and prune that"
        )
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        raise UltraPruneError("the model has no BatchNorm2d layers, so there are no BN scales to rank channels by; "
                              "network slimming needs a model with Conv+BN blocks")


def channel_widths(model: nn.Module, imgsz: int = 64) -> tuple[dict, list[int]]:
    """One forward pass: output channels of every module, and of every top-level layer, in order."""
    seen: dict[nn.Module, int] = {}

    def hook(m, _inp, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            seen[m] = out.shape[1]

    forward_zeros(model, imgsz, {m: hook for m in model.modules()})
    return seen, [seen.get(m, 0) for m in model.model]


def analyse(model: nn.Module, imgsz: int = 64, seen: dict | None = None) -> ChannelGraph:
    """Build the channel dependency graph of ``model`` (not modified); ``seen``: its ``channel_widths`` when known."""
    seen = seen if seen is not None else channel_widths(model, imgsz)[0]
    graph = ChannelGraph(rule_for, seen)
    graph.analyse(model, input_channels(model))
    return graph


def reference_flops(model: nn.Module, imgsz: int) -> float | None:
    """FLOPs of ``model`` at ``imgsz`` as ultralytics counts them (None where its counter is unavailable)."""
    from ultralytics.utils.torch_utils import get_flops

    g = get_flops(model, imgsz)
    return g * 1e9 if g else None


def flops_model(model: nn.Module, imgsz: int) -> FlopsModel:
    """The FLOPs cost model of ``model`` at ``imgsz``, anchored on ultralytics' own count."""
    return FlopsModel(model, imgsz, reference_flops(model, imgsz))


PRUNE_BY = ("channels", "flops", "latency")  # the budgets by name: what a share of the model means


def budget_for(prune_by: str, ratio: float, model: nn.Module, imgsz: int = 640, latency=None) -> Budget:
    """The budget ``ratio`` of ``model`` means under ``prune_by``: of its prunable channels, of its FLOPs at
    ``imgsz`` as ultralytics counts them, or of its latency at ``imgsz`` as ``latency`` (a function of the model
    and imgsz returning its ``cost.LatencyModel``, e.g. ``ultra_prune.latency.table.LatencyTable.model``) predicts it."""
    if prune_by == "flops":
        return Flops(ratio, flops_model(model, imgsz))
    if prune_by == "channels":
        return Channels(ratio)
    if prune_by == "latency":
        if latency is None:
            raise ValueError("prune_by='latency' needs latency= (the model's measured latency table)")
        return Latency(ratio, latency(model, imgsz))
    raise ValueError(f"prune_by={prune_by!r} is not one of {PRUNE_BY}")


def prune_model(model: nn.Module, ratio: float, round_to: int = 8, floor: int = 8, prune_by: str = "channels",
                imgsz: int = 640, take_dead: bool = False, importance: Importance | None = None, latency=None,
                depth: bool = False) -> tuple[nn.Module, Pruning]:
    """Return ``(pruned, info)``: a pruned deep copy of ``model`` and what changed (``record.Pruning``).

    At least ``ratio`` of the budget ``prune_by`` names (``budget_for``: prunable channels, GFLOPs or latency at ``imgsz``)
    is removed, lowest ``importance`` first (default ``Magnitude``: BN |gamma|), in ``select``'s steps: kept counts
    are multiples of ``round_to`` and at least ``floor``. ``take_dead``: every channel whose whole group has gamma
    exactly 0 goes too (a sparse-target checkpoint). ``info["pruned"]`` is False when nothing could be removed
    (every space at its floor); ``pruned`` is then an unchanged copy. ``prune_by='latency'`` needs ``latency``
    (see ``budget_for``); ``info["latency_ms"]`` is then the predicted (before, after). ``depth``: where every
    layer at its floor still misses a FLOPs or latency budget, residual blocks (``x + f(x)``) are removed whole,
    least important first, until it is met (``info["removed_blocks"]``: their module names). ``info["sliced"]``:
    each sliced parameter's name -> the rows and columns of the original it kept (``surgery.Kept``).
    """
    check_prunable(model)
    importance = importance or Magnitude()
    model = copy.deepcopy(model).float()
    seen, before = channel_widths(model)
    graph = analyse(model, seen=seen)
    roots = graph.roots()
    budget = budget_for(prune_by, ratio, model, imgsz, latency)
    bound = importance.bind(model)
    keep = select(roots, budget, bound, round_to, floor, take_dead)
    blocks = select_blocks(roots, keep, graph.blocks, budget, bound) if depth and prune_by != "channels" else []
    names = {m: n for n, m in model.named_modules()}
    removed_blocks = [names[b.module] for b in blocks]
    prunable = sum(s.size for s in roots if s.prunable)
    removed = sum(s.size - len(k) for s, k in keep.items())
    removed += sum(len(keep[s]) if s in keep else s.size for b in blocks for s in b.hidden(roots))
    slices = Slices()
    if keep or blocks:
        compensate(keep)
        slice_channels(keep, slices)
        for fn in graph.finalizers:
            fn()
        remove_blocks(blocks, slices)
    _, after = channel_widths(model)
    step = {k: v for k, v in HistoryEntry(ratio, prune_by, round_to, floor, importance.name, before, removed_blocks).stored().items()
            if k != "removed_in_run"}  # set by the run that removes its zeroed channels
    history = [*getattr(model, MARKER, {}).get("history", []), step]
    if keep or blocks:
        setattr(model, MARKER, {"history": history, "widths": after, "original_widths": history[0]["widths_before"]})
    latency_ms = (budget.cost.total, budget.cost.latency()) if isinstance(budget, Latency) else None
    sliced = {n: slices[p] for n, p in model.named_parameters() if p in slices}
    return model, Pruning(bool(keep or blocks), before, after, [type(m).__name__ for m in model.model], prunable,
                          removed, sorted(set(graph.intact)), importance.name, removed_blocks, latency_ms, sliced)

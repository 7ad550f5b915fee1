"""Network-slimming channel pruning of ultralytics models (detect, segment, pose, obb, classify).

``prune_model`` = checks -> dependency analysis (``graph`` + ``rules``) -> selection (``select``, ranked by an
``importance``) -> surgery (``surgery``). The result is made only of stock ultralytics classes and carries a small ``ultra_prune``
marker dict (ratio, options, widths before/after).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning.graph import ChannelGraph
from ultra_prune.pruning.cost import FlopsModel
from ultra_prune.pruning.importance import IMPORTANCES, TaylorScores
from ultra_prune.pruning.select import plan, select_target
from ultra_prune.pruning.surgery import compensate, slice_channels

MARKER = "ultra_prune"  # attribute on the pruned model, a plain dict


def is_pruned(model) -> bool:
    """True for a model ultra-prune pruned (it carries the marker)."""
    return isinstance(getattr(model, MARKER, None), dict)


def check_prunable(model: nn.Module) -> None:
    """Raise UltraPruneError unless ``model`` is an unfused ultralytics model with BatchNorm layers whose head has a
    channel rule (detect, segment, pose, obb and classify heads; plugins may add others)."""
    from ultralytics.nn.tasks import guess_model_task

    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "model", None), nn.Sequential):
        raise UltraPruneError(f"expected an ultralytics model (e.g. a DetectionModel), got {type(model).__name__}")
    head = model.model[-1]
    if _rule_for()(head) is None:
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


@torch.no_grad()
def channel_widths(model: nn.Module, imgsz: int = 64) -> tuple[dict, list[int]]:
    """One forward pass: output channels of every module, and of every top-level layer, in order."""
    seen: dict[nn.Module, int] = {}

    def hook(m, _inp, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4:
            seen[m] = out.shape[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        ch = model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
        model(torch.zeros(1, ch, imgsz, imgsz, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(training)
    return seen, [seen.get(m, 0) for m in model.model]


def _rule_for():
    from ultra_prune.plugins import get_plugin_manager

    hook = get_plugin_manager().hook.ultra_prune_channel_rule
    return lambda m: hook(module=m)


def analyse(model: nn.Module, imgsz: int = 64) -> ChannelGraph:
    """Build the channel dependency graph of ``model`` (not modified)."""
    seen, _ = channel_widths(model, imgsz)
    graph = ChannelGraph(_rule_for(), seen)
    ch = model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
    graph.analyse(model, ch)
    return graph


def reference_flops(model: nn.Module, imgsz: int) -> float | None:
    """FLOPs of ``model`` at ``imgsz`` as ultralytics counts them (None where its counter is unavailable)."""
    from ultralytics.utils.torch_utils import get_flops

    g = get_flops(model, imgsz)
    return g * 1e9 if g else None


def flops_model(model: nn.Module, imgsz: int) -> FlopsModel:
    """The FLOPs cost model of ``model`` at ``imgsz``, anchored on ultralytics' own count."""
    return FlopsModel(model, imgsz, reference_flops(model, imgsz))


def plan_channels(model: nn.Module, graph: ChannelGraph, ratio: float, round_to: int = 8, floor: int = 8,
                  prune_by: str = "channels", imgsz: int = 640, take_dead: bool = False,
                  importance=IMPORTANCES["l1"]) -> dict:
    """The channels to keep per space of ``graph`` (of ``model``), for ``ratio`` of the prunable channels
    (``prune_by='channels'``, one global ranking) or of the model's FLOPs at ``imgsz`` (``prune_by='flops'``,
    steps cheapest first), lowest ``importance`` first."""
    roots = graph.roots()
    if prune_by == "channels" and not take_dead:
        return plan(roots, ratio, round_to, floor, importance)
    flops = flops_model(model, imgsz) if prune_by == "flops" else None
    return select_target(roots, ratio, round_to, floor, flops=flops, importance=importance, take_dead=take_dead)


def prune_model(model: nn.Module, ratio: float, round_to: int = 8, floor: int = 8, prune_by: str = "channels",
                imgsz: int = 640, take_dead: bool = False, importance: str | TaylorScores = "l1"):
    """Return ``(pruned, info)``: a pruned deep copy of ``model`` and a dict describing what changed.

    ``importance`` ranks the channels: ``'l1'`` (BN |gamma|, the largest of a coupled group), ``'relative'``
    (|gamma| over its layer's mean) or ``TaylorScores`` of ``model`` (first-order loss changes from data).
    ``prune_by='channels'``: ``ratio`` of all prunable channels (ranked globally) is removed; kept counts are
    floored at ``floor`` and rounded up to multiples of ``round_to``. ``prune_by='flops'``: channels go in steps,
    least important first, until ``ratio`` of the GFLOPs at ``imgsz`` is gone. ``take_dead``: every channel whose
    whole group has gamma exactly 0 goes too (a sparse-target checkpoint).
    ``info["pruned"]`` is False when nothing could be removed (every space at its floor); ``pruned`` is then an
    unchanged copy.
    """
    from ultra_prune.args import validate

    validate({"prune": ratio, "prune_round": round_to, "prune_min": floor, "prune_by": prune_by})
    check_prunable(model)
    if not isinstance(importance, TaylorScores) and importance not in IMPORTANCES:
        raise UltraPruneError(f"importance '{importance}' is not one of {(*IMPORTANCES, 'TaylorScores')}")
    model = copy.deepcopy(model).float()
    _, before = channel_widths(model)
    graph = analyse(model)
    roots = graph.roots()
    rank = importance.importance(model) if isinstance(importance, TaylorScores) else IMPORTANCES[importance]
    keep = plan_channels(model, graph, ratio, round_to, floor, prune_by, imgsz, take_dead, rank)
    prunable = sum(s.size for s in roots if s.prunable)
    removed = sum(s.size - len(k) for s, k in keep.items())
    if keep:
        compensate(keep)
        slice_channels(keep)
        for fn in graph.finalizers:
            fn()
    _, after = channel_widths(model)
    history = list(getattr(model, MARKER, {}).get("history", []))
    named = "taylor" if isinstance(importance, TaylorScores) else importance
    history.append({"prune": ratio, "prune_by": prune_by, "prune_round": round_to, "prune_min": floor,
                    "prune_importance": named, "widths_before": before})
    if keep:
        setattr(model, MARKER, {"history": history, "widths": after, "original_widths": history[0]["widths_before"]})
    info = {
        "pruned": bool(keep),
        "widths_before": before,
        "widths_after": after,
        "layer_types": [type(m).__name__ for m in model.model],
        "prunable_channels": prunable,
        "removed_channels": removed,
        "left_intact": sorted(set(graph.intact)),
        "prune_importance": named,
    }
    return model, info

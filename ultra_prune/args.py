"""The arguments ultra-prune adds to ultralytics' cfg, their defaults and their validation."""

from __future__ import annotations

import math

from ultra_prune.errors import UltraPruneError

# Every key ultra-prune adds to ultralytics' DEFAULT_CFG, with its default.
EXTRA_DEFAULTS = {
    "sparsity": 0.0,  # L1 strength on BatchNorm2d weights (gamma); 0 = off
    "sparsity_beta": 0.0,  # L1 strength on BatchNorm2d biases (beta)
    "sparsity_decay": 0.1,  # lambda falls linearly to this fraction of its start over the run
    "sparsity_target": 0.0,  # share of prunable channels (or GFLOPs, prune_by=flops) to drive to zero; 0 = off
    "sparsity_mode": "polar",  # 'polar' / 'prox' (soft-threshold after each step) or 'grad' (lambda*sign in the gradient)
    "prune": 0.0,  # fraction of prunable channels to remove (0 = no pruning)
    "prune_by": "channels",  # what prune= and sparsity_target= count: 'channels' (prunable channels) or 'flops'
    "prune_importance": "auto",  # how prune= ranks channels: 'taylor' (needs data), 'l1', 'relative'; auto: taylor with data
    "prune_round": 8,  # kept channel counts are rounded up to a multiple of this
    "prune_min": 8,  # per-layer floor of kept channels
    "distill_model": None,  # teacher checkpoint for distillation while training (ultralytics' own key on 8.4.80+)
    "distill_loss": "logit",  # 'logit' (ultra-prune: class scores + box distributions) or 'feature' (ultralytics')
    "prune_onnx": False,  # `yolo prune`: also report ONNX sizes and onnxruntime-vs-torch parity
    "prune_out": None,  # where `yolo prune` writes the pruned checkpoint (default: <model>_pruned.pt)
}
SPARSITY_MODES = ("prox", "polar", "grad")
PRUNE_BY = ("channels", "flops")
PRUNE_IMPORTANCES = ("auto", "taylor", "l1", "relative")
DISTILL_LOSSES = ("logit", "feature")


def native_distillation() -> bool:
    """Whether the installed ultralytics ships its own (feature) distillation (8.4.80 and later)."""
    import importlib.util

    return importlib.util.find_spec("ultralytics.nn.distill_model") is not None


def _number(key, value, lo, hi, lo_open, hi_open, example, integer=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise UltraPruneError(f"'{key}={value}' is not {kind}; use e.g. {key}={example}")
    if math.isnan(value) or value < lo or (lo_open and value == lo) or value > hi or (hi_open and value == hi):
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise UltraPruneError(f"'{key}={value}' is out of range {lb}{lo}, {hi}{rb}; use e.g. {key}={example}")


def validate(args: dict) -> None:
    """Raise UltraPruneError naming the first bad ultra-prune argument in ``args`` (keys not given are skipped)."""
    get = args.get
    if get("sparsity") is not None:
        _number("sparsity", get("sparsity"), 0, math.inf, False, True, "1e-2")
    if get("sparsity_beta") is not None:
        _number("sparsity_beta", get("sparsity_beta"), 0, math.inf, False, True, "1e-3")
    if get("sparsity_decay") is not None:
        _number("sparsity_decay", get("sparsity_decay"), 0, 1, True, False, "0.1")
    if get("sparsity_mode") is not None and get("sparsity_mode") not in SPARSITY_MODES:
        raise UltraPruneError(f"'sparsity_mode={get('sparsity_mode')}' is not one of {SPARSITY_MODES}; use e.g. sparsity_mode=polar")
    if get("sparsity_target") not in (None, 0, 0.0):
        _number("sparsity_target", get("sparsity_target"), 0, 1, True, True, "0.5")
        if get("sparsity") or get("sparsity_beta"):
            raise UltraPruneError(
                "'sparsity_target' sets its own strength; it cannot be combined with 'sparsity'/'sparsity_beta' "
                "(a manual lambda): drop sparsity= to train to the target, or drop sparsity_target= for the classic recipe"
            )
    if get("prune_by") is not None and get("prune_by") not in PRUNE_BY:
        raise UltraPruneError(f"'prune_by={get('prune_by')}' is not one of {PRUNE_BY}; use e.g. prune_by=flops")
    if get("prune_importance") is not None and get("prune_importance") not in PRUNE_IMPORTANCES:
        raise UltraPruneError(f"'prune_importance={get('prune_importance')}' is not one of {PRUNE_IMPORTANCES}; "
                              "use e.g. prune_importance=taylor")
    if get("distill_loss") is not None and get("distill_loss") not in DISTILL_LOSSES:
        raise UltraPruneError(f"'distill_loss={get('distill_loss')}' is not one of {DISTILL_LOSSES}; use e.g. distill_loss=logit")
    if get("distill_loss") == "feature" and not native_distillation():
        raise UltraPruneError("'distill_loss=feature' is ultralytics' own distillation, which this ultralytics release "
                              "does not ship (8.4.80 and later do); use distill_loss=logit")
    if get("prune") not in (None, 0, 0.0):
        _number("prune", get("prune"), 0, 1, True, True, "0.5")
    if get("prune_round") is not None:
        _number("prune_round", get("prune_round"), 1, math.inf, False, True, "8", integer=True)
    if get("prune_min") is not None:
        _number("prune_min", get("prune_min"), 1, math.inf, False, True, "8", integer=True)
    if get("prune") not in (None, 0, 0.0) and get("resume"):
        raise UltraPruneError(
            "'resume' cannot be combined with 'prune': resume continues the run as it was; "
            "drop prune= to resume, or drop resume= to prune and start a new fine-tuning run"
        )

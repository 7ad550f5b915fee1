"""The arguments ultra-prune adds to ultralytics' cfg, their defaults and their validation."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import PRUNE_BY
from ultra_prune.pruning.importance import NAMED
from ultra_prune.runtimes import LATENCY_RUNTIMES

# Every key ultra-prune adds to ultralytics' DEFAULT_CFG: its default and what it means (shown by `yolo cfg`).
ARGS = {
    "sparsity": (0.0, "L1 strength on BatchNorm2d weights (gamma); 0 = off"),
    "sparsity_beta": (0.0, "L1 strength on BatchNorm2d biases (beta)"),
    "sparsity_decay": (0.1, "lambda falls linearly to this fraction of its start over the run"),
    "sparsity_target": (0.0, "share of prunable channels (or of GFLOPs / latency, see prune_by) to drive to zero; 0 = off"),
    "prune_at_zero": (False, "sparsity_target=: remove the chosen channels as soon as they reach zero and train the "
                             "smaller model for the rest of the run (its last.pt and best.pt are pruned)"),
    "sparsity_mode": ("polar", "'polar' / 'prox' (soft-threshold after each step) or 'grad' (lambda*sign in the gradient)"),
    "prune": (0.0, "share of prunable channels (or of GFLOPs / latency, see prune_by) to remove; 0 = no pruning"),
    "prune_by": ("channels", "what prune= and sparsity_target= count: 'channels' (prunable channels), 'flops' "
                             "(GFLOPs at imgsz) or 'latency' (measured on latency_runtime at imgsz)"),
    "latency_runtime": ("onnxruntime", "prune_by=latency: the runtime latency is measured on: 'onnxruntime' / "
                                       "'openvino' (CPU, 1 thread) or 'torch' (the training device)"),
    "latency_batch": (1, "prune_by=latency: the batch size latency is measured at"),
    "prune_importance": ("auto", "how prune= ranks channels: 'taylor' (needs data), 'l1', 'relative'; auto: taylor with data"),
    "prune_round": ("auto", "kept channel counts are multiples of this; auto: 8, or under prune_by=latency the "
                            "multiple latency_runtime runs fastest at (measured)"),
    "prune_min": (8, "per-layer floor of kept channels"),
    "prune_depth": (True, "prune= with prune_by=flops or latency: where every layer at its floor still misses the "
                          "budget, also remove whole residual blocks (x + f(x) -> x), least important first"),
    "distill_model": (None, "teacher checkpoint for distillation while training (ultralytics' own key on 8.4.80+)"),
    "distill_loss": ("auto", "'logit' (ultra-prune: class scores + box distributions), 'feature' (ultralytics'); "
                             "auto: logit when a detection run slims, else ultralytics' own"),
    "prune_onnx": (False, "`yolo prune`: also report ONNX sizes and onnxruntime-vs-torch parity"),
    "prune_out": (None, "where `yolo prune` writes the pruned checkpoint (default: <model>_pruned.pt)"),
}
EXTRA_DEFAULTS = {key: default for key, (default, _) in ARGS.items()}
# The arguments that make a run an ultra-prune run (it then trains with ultra-prune's trainer) when set to anything
# but their default; without them (and without a pruned model) a run is ultralytics' own, untouched.
SLIMMING_KEYS = ("sparsity", "sparsity_beta", "sparsity_target", "prune")
SPARSITY_MODES = ("prox", "polar", "grad")
PRUNE_IMPORTANCES = ("auto", "taylor", *NAMED)
DISTILL_LOSSES = ("auto", "logit", "feature")


@dataclass(frozen=True)
class PruneConfig:
    """One pruning's (or one sparse-target run's) settings in the pruner's words, built from ultra-prune's keys in
    one place (``of``): the share ``ratio`` of the budget ``by`` to remove, the importance's name, the rounding
    (``'auto'`` until ``resolved``) and floor of kept counts, the image size FLOPs, latency and Taylor scores are
    counted at, the runtime and batch latency is measured on, and whether ``prune=`` may remove whole residual
    blocks where the floors stop it (``depth``)."""

    ratio: float
    by: str = "channels"
    importance: str = "auto"
    round_to: int | str = "auto"
    floor: int = 8
    imgsz: int = 640
    runtime: str = "onnxruntime"
    batch: int = 1
    depth: bool = True

    def resolved(self, model=None, device=None, verbose: bool = True) -> PruneConfig:
        """This config with ``round_to='auto'`` made a number: under ``by='latency'`` the channel multiple
        ``model`` runs fastest at on the runtime (``latency.preferred_round``, measured once per machine and
        model), or a finer one where its floors would not let ``ratio`` of the latency go; else 8."""
        if self.round_to != "auto":
            return self
        if self.by != "latency":
            return replace(self, round_to=8)
        from ultra_prune.latency import preferred_round
        from ultra_prune.runtimes import runtime_for

        runtime = runtime_for(self.runtime, device)
        return replace(self, round_to=preferred_round(runtime, model, self.imgsz, self.batch, verbose=verbose,
                                                      reach=self.ratio, floor=self.floor))

    @classmethod
    def of(cls, ratio: float, args: dict) -> PruneConfig:
        """From ``args`` (user arguments or a run's ``train_args``; a missing or None key takes its default)."""
        def get(key):
            return args[key] if args.get(key) is not None else EXTRA_DEFAULTS.get(key)

        imgsz = args.get("imgsz") or 640
        imgsz = max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz
        round_to = get("prune_round")
        return cls(float(ratio), get("prune_by"), get("prune_importance"),
                   round_to if round_to == "auto" else int(round_to), int(get("prune_min")), int(imgsz),
                   get("latency_runtime"), int(get("latency_batch")), bool(get("prune_depth")))


def native_distillation() -> bool:
    """Whether the installed ultralytics ships its own (feature) distillation (8.4.80 and later)."""
    import importlib.util

    return importlib.util.find_spec("ultralytics.nn.distill_model") is not None


def is_slimming_run(args: dict) -> bool:
    """Whether training arguments (overrides, or a checkpoint's ``train_args``) need ultra-prune's trainer: a slimming
    argument (``SLIMMING_KEYS``), or distillation only ultra-prune provides (``distill_loss=logit`` by name, or any
    ``distill_model=`` on an ultralytics release without its own). Anything else is a stock ultralytics run."""
    if any(args.get(k) for k in SLIMMING_KEYS):
        return True
    return bool(args.get("distill_model")) and (args.get("distill_loss") == "logit" or not native_distillation())


def resolve_distill_loss(loss: str, task: str) -> str:
    """The distillation a run in ultra-prune's trainer (a run that slims) uses for ``distill_loss=loss``: ``auto`` is
    ultra-prune's logit distillation for detection (a pruned student has its teacher's head), else ultralytics' own
    feature distillation where the release ships it."""
    if loss != "auto":
        return loss
    return "logit" if task == "detect" or not native_distillation() else "feature"


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
    if get("prune_at_zero") not in (None, False, True):
        raise UltraPruneError(f"'prune_at_zero={get('prune_at_zero')}' is not a boolean; use prune_at_zero=True")
    if get("prune_at_zero") and not get("sparsity_target"):
        raise UltraPruneError("'prune_at_zero=True' removes the channels a sparsity_target= run zeroes; add "
                              "sparsity_target= (e.g. sparsity_target=0.5), or drop prune_at_zero=")
    if get("prune_depth") not in (None, False, True):
        raise UltraPruneError(f"'prune_depth={get('prune_depth')}' is not a boolean; use prune_depth=False to keep "
                              "every residual block")
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
    if get("prune_round") not in (None, "auto"):
        _number("prune_round", get("prune_round"), 1, math.inf, False, True, "8", integer=True)
    if get("latency_runtime") is not None and get("latency_runtime") not in LATENCY_RUNTIMES:
        raise UltraPruneError(f"'latency_runtime={get('latency_runtime')}' is not one of {LATENCY_RUNTIMES}; "
                              "use e.g. latency_runtime=onnxruntime")
    if get("latency_batch") is not None:
        _number("latency_batch", get("latency_batch"), 1, math.inf, False, True, "1", integer=True)
    if get("prune_min") is not None:
        _number("prune_min", get("prune_min"), 1, math.inf, False, True, "8", integer=True)
    if get("prune") not in (None, 0, 0.0) and get("sparsity_target") not in (None, 0, 0.0):
        raise UltraPruneError(
            f"'prune={get('prune')}' and 'sparsity_target={get('sparsity_target')}' cannot be combined: prune= removes "
            "channels before training and sparsity_target= drives more of what is left to zero during it; use "
            "sparsity_target= alone (then yolo prune), or prune= alone to prune and fine-tune"
        )
    if get("prune") not in (None, 0, 0.0) and get("resume"):
        raise UltraPruneError(
            "'resume' cannot be combined with 'prune': resume continues the run as it was; "
            "drop prune= to resume, or drop resume= to prune and start a new fine-tuning run"
        )

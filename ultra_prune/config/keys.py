"""The key table: every argument ultra-prune adds to ultralytics' cfg, its type and range, default and help text, and
the one validation of them (``validate``); the keys each command takes (``COMMAND_KEYS``)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from ultra_prune.errors import UltraPruneError
from ultra_prune.patches.versions import native_distillation

INF = math.inf


@dataclass(frozen=True)
class Key:
    """One argument: its default and help text, and what values it takes: a number in a range (``low``/``high``,
    open ends refused, ``integer`` for whole numbers), one of ``choices``, a boolean (``flag``), or anything
    (``kind='any'``, not checked). ``skip``: values that mean 'off' and are not checked; ``example`` goes into the
    error message."""

    default: object
    help: str
    kind: str = "any"  # 'number' | 'choice' | 'flag' | 'any'
    low: float = 0
    high: float = INF
    open_low: bool = False
    open_high: bool = True
    integer: bool = False
    choices: tuple = ()
    example: str = ""
    skip: tuple = (None,)

    def check(self, key: str, value) -> None:
        """Raise UltraPruneError naming ``key=value`` and the fix unless ``value`` is one this key takes."""
        if value in self.skip:
            return
        if self.kind == "number":
            self._number(key, value)
        elif self.kind == "choice" and value not in self.choices:
            raise UltraPruneError(f"'{key}={value}' is not one of {self.choices}; use e.g. {key}={self.example}")
        elif self.kind == "flag" and value not in (False, True):
            raise UltraPruneError(f"'{key}={value}' is not a boolean; use {self.example}")

    def _number(self, key: str, value) -> None:
        integer = self.integer
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and value != int(value)):
            kind = "an integer" if integer else "a number"
            raise UltraPruneError(f"'{key}={value}' is not {kind}; use e.g. {key}={self.example}")
        lo, hi = self.low, self.high
        if math.isnan(value) or value < lo or (self.open_low and value == lo) or value > hi or (self.open_high and value == hi):
            lb, rb = "(" if self.open_low else "[", ")" if self.open_high else "]"
            raise UltraPruneError(f"'{key}={value}' is out of range {lb}{lo}, {hi}{rb}; use e.g. {key}={self.example}")


OFF = (None, 0, 0.0)  # a share of 0 means 'off' and is not checked
# The budgets and importances by name: the same tuples as pruning.PRUNE_BY and pruning.importance.NAMED
# (tests/test_config.py checks), written here so the table needs no torch. The latency runtimes and precisions are
# registered here (latency.runtimes reads them; the stand-alone agent keeps its own copy, checked by the same test).
PRUNE_BY = ("channels", "flops", "latency")
PRUNE_IMPORTANCES = ("auto", "taylor", "l1", "relative")
LATENCY_RUNTIMES = ("onnxruntime", "openvino", "ncnn", "mnn", "litert", "torch")
LATENCY_PRECISIONS = ("fp32", "fp16", "int8")
SPARSITY_MODES = ("prox", "polar", "grad")
DISTILL_LOSSES = ("auto", "logit", "feature")

# Every key ultra-prune adds to ultralytics' DEFAULT_CFG, in the order `yolo cfg` and the README list them.
KEYS = {
    "sparsity": Key(0.0, "manual L1 strength on BatchNorm2d weights (gamma); 0 = off; not with sparsity_target",
                    "number", example="1e-2"),
    "sparsity_beta": Key(0.0, "manual L1 strength on BatchNorm2d biases (beta)", "number", example="1e-3"),
    "sparsity_decay": Key(0.1, "lambda falls linearly to this fraction of its start over the run", "number", high=1,
                          open_low=True, open_high=False, example="0.1"),
    "sparsity_target": Key(0.0, "share of prunable channels (or of GFLOPs / latency, see prune_by) to drive to zero; "
                                "0 = off", "number", high=1, open_low=True, example="0.5", skip=OFF),
    "prune_at_zero": Key(False, "sparsity_target=: remove the chosen channels as soon as they reach zero and train the "
                                "smaller model for the rest of the run (its last.pt and best.pt are pruned)", "flag",
                         example="prune_at_zero=True"),
    "sparsity_mode": Key("polar", "how lambda acts: 'polar' (soft-threshold the gammas under their layer's mean after "
                                  "each step), 'prox' (soft-threshold every gamma) or 'grad' (lambda*sign(gamma) in the "
                                  "gradient)", "choice", choices=SPARSITY_MODES, example="polar"),
    "prune": Key(0.0, "share of prunable channels (or of GFLOPs / latency, see prune_by) to remove; 0 = no pruning; "
                      "not with resume or sparsity_target",
                 "number", high=1, open_low=True, example="0.5", skip=OFF),
    "prune_by": Key("channels", "what prune= and sparsity_target= count: 'channels' (prunable channels), 'flops' "
                                "(GFLOPs at imgsz) or 'latency' (measured on latency_runtime at imgsz)", "choice",
                    choices=PRUNE_BY, example="flops"),
    "latency_runtime": Key("onnxruntime", "prune_by=latency: the runtime latency is measured on: 'onnxruntime', "
                                          "'openvino', 'ncnn', 'mnn', 'litert' (CPU, 1 thread) or 'torch' (the "
                                          "training device)", "choice", choices=LATENCY_RUNTIMES,
                           example="onnxruntime"),
    "latency_batch": Key(1, "prune_by=latency: the batch size latency is measured at", "number", low=1, integer=True,
                         example="1"),
    "latency_precision": Key("fp32", "prune_by=latency: the precision latency_runtime runs at here: 'fp32', 'fp16' "
                                     "(openvino, ncnn, mnn) or 'int8' (onnxruntime static QDQ, openvino NNCF, "
                                     "litert integer quantization, mnn offline quantization)",
                             "choice", choices=LATENCY_PRECISIONS, example="int8"),
    "latency_device": Key(None, "prune_by=latency: time on the device the model ships to, through the agent running "
                                "there: http://host:port (http://TOKEN@host:port); its runtime and precision are the "
                                "agent's (ultra-prune agent runtime=... precision=...)"),
    "latency_table": Key(None, "prune_by=latency: time from a table an agent wrote offline (table.json of a kit made "
                               "by ultra-prune latency-kit), instead of timing here"),
    "prune_importance": Key("auto", "how prune= ranks channels: 'taylor' (needs data), 'l1' (BN |gamma|), 'relative' "
                                    "(|gamma| over its layer's mean); auto: taylor with data, else l1", "choice",
                            choices=PRUNE_IMPORTANCES, example="taylor"),
    "prune_round": Key("auto", "kept channel counts are multiples of this; auto: 8, or under prune_by=latency the "
                               "multiple latency_runtime runs fastest at (measured)", "number", low=1, integer=True,
                       example="8", skip=(None, "auto")),
    "prune_min": Key(8, "per-layer floor of kept channels", "number", low=1, integer=True, example="8"),
    "prune_depth": Key(True, "prune= with prune_by=flops or latency: where every layer at its floor still misses the "
                             "budget, also remove whole residual blocks (x + f(x) -> x), least important first", "flag",
                       example="prune_depth=False to keep every residual block"),
    "distill_model": Key(None, "teacher checkpoint for distillation while training (ultralytics' own key on 8.4.80+); "
                               "its head must match the student's"),
    "distill_loss": Key("auto", "'logit' (ultra-prune: class scores + box distributions, detect only) or 'feature' "
                                "(ultralytics'); "
                                "auto: logit when a detection run slims, else ultralytics' own", "choice",
                        choices=DISTILL_LOSSES, example="logit"),
    "prune_onnx": Key(False, "`yolo prune`: also report ONNX sizes and onnxruntime-vs-torch parity"),
    "prune_out": Key(None, "where `yolo prune` writes the pruned checkpoint (default: <model>_pruned.pt)"),
}
DEFAULTS = {key: k.default for key, k in KEYS.items()}
# The arguments that make a run an ultra-prune run (it then trains with ultra-prune's trainer) when set to anything
# but their default; without them (and without a pruned model) a run is ultralytics' own, untouched.
SLIMMING_KEYS = ("sparsity", "sparsity_beta", "sparsity_target", "prune")
# The other keys a command uses (ultralytics' own, and report_files), with what they mean there (`yolo prune help`)
SHARED = {
    "data": "dataset yaml: ranks channels by Taylor scores (prune_importance=auto) and adds mAP before/after",
    "imgsz": "image size for FLOPs, latency and Taylor scores (default: the checkpoint's training imgsz, else 640)",
    "batch": "batch size of the Taylor-score and validation passes",
    "device": "where Taylor scores are gathered and prune_by=latency latency_runtime=torch is timed",
    "exist_ok": "overwrite the output file if it exists",
    "verbose": "print the report",
    "report_files": "write <output stem>_report.txt / _report.json beside the output",
}
SHARED_DEFAULTS = {"data": None, "imgsz": None, "batch": 16, "device": None, "exist_ok": False, "verbose": True,
                   "report_files": True}
# The keys each command takes (besides model=): `yolo prune`, `ultra-prune prune` and Model.prune() alike.
COMMAND_KEYS = {
    "prune": ("prune", "prune_by", "prune_importance", "prune_round", "prune_min", "prune_depth", "prune_out",
              "prune_onnx", "latency_runtime", "latency_batch", "latency_precision", "latency_device",
              "latency_table", *SHARED),
    "demo": ("out", "epochs", "data", "model", "imgsz", "recipe", "prune", "prune_by", "batch", "exist_ok"),
}


def validate(args: dict) -> None:
    """Raise UltraPruneError naming the first bad ultra-prune argument in ``args`` (keys not given are skipped), then
    the first combination of them that cannot go together."""
    for key, spec in KEYS.items():
        if key in args:
            spec.check(key, args[key])
    get = args.get
    if get("sparsity_target") not in OFF and (get("sparsity") or get("sparsity_beta")):
        raise UltraPruneError(
            "'sparsity_target' sets its own strength; it cannot be combined with 'sparsity'/'sparsity_beta' "
            "(a manual lambda): drop sparsity= to train to the target, or drop sparsity_target= for the classic recipe"
        )
    if get("prune_at_zero") and not get("sparsity_target"):
        raise UltraPruneError("'prune_at_zero=True' removes the channels a sparsity_target= run zeroes; add "
                              "sparsity_target= (e.g. sparsity_target=0.5), or drop prune_at_zero=")
    if get("distill_loss") == "feature" and not native_distillation():
        raise UltraPruneError("'distill_loss=feature' is ultralytics' own distillation, which this ultralytics release "
                              "does not ship (8.4.80 and later do); use distill_loss=logit")
    if get("prune") not in OFF and get("sparsity_target") not in OFF:
        raise UltraPruneError(
            f"'prune={get('prune')}' and 'sparsity_target={get('sparsity_target')}' cannot be combined: prune= removes "
            "channels before training and sparsity_target= drives more of what is left to zero during it; use "
            "sparsity_target= alone (then yolo prune), or prune= alone to prune and fine-tune"
        )
    if get("latency_device") and get("latency_table"):
        raise UltraPruneError("'latency_device' and 'latency_table' both say where latency is measured; give one: the "
                              "agent's address, or the table it wrote")
    if get("latency_device") and not str(get("latency_device")).startswith("http://"):
        raise UltraPruneError(f"'latency_device={get('latency_device')}' is not an agent's address; use "
                              "latency_device=http://host:port (http://TOKEN@host:port with a token)")
    if get("prune") not in OFF and get("resume"):
        raise UltraPruneError(
            "'resume' cannot be combined with 'prune': resume continues the run as it was; "
            "drop prune= to resume, or drop resume= to prune and start a new fine-tuning run"
        )


_CHECKED: ContextVar[bool] = ContextVar("ultra_prune_checked", default=False)


@contextmanager
def checked(args: dict, command: str | None = None):
    """Validate ``args`` at the door they came in by (``Model.train``, ``Model.prune``, a CLI), and for a
    ``command`` that it takes each key (``COMMAND_KEYS``; ``model=`` aside); what runs inside (a trainer built by
    ``Model.train``, the prune command) does not check them again (``checked_already``)."""
    validate(args)
    if command is not None:
        valid = {"model", *COMMAND_KEYS[command]}
        unknown = sorted(set(args) - valid)
        if unknown:
            raise UltraPruneError(f"unknown {command} argument(s) {unknown}; valid: {sorted(valid)}")
    token = _CHECKED.set(True)
    try:
        yield
    finally:
        _CHECKED.reset(token)


def checked_already() -> bool:
    """Whether the arguments of the run being built were validated at its door (inside ``checked``)."""
    return _CHECKED.get()


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

"""The ultra-prune trainers: sparse (BN-L1) training, one-shot pruning and pruned-model fine-tuning.

One shared piece, ``SlimTrainer``, applied to each stock task trainer (detect, segment, pose, obb, classify); the
classes live in this importable module, so DDP workers can rebuild them. ``SlimTrainer`` keeps only ultralytics'
overrides: the model to train comes from ``architecture``, every other job is a part (``parts``) it forwards to. It
is also the plugin that hands the trainers to ``Model.train``.
"""

from __future__ import annotations

import functools

import torch
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, colorstr

from ultra_prune.train.architecture import prune_for_training, reset_classes, trainable_copy, unwrap, write_pruned
from ultra_prune.config.keys import DEFAULTS, checked_already, resolve_distill_loss, validate
from ultra_prune.config.settings import PruneConfig
from ultra_prune.io.checkpoint import TRAINING_STATE
from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl
from ultra_prune.patches.versions import registers_plots, task_trainers
from ultra_prune.train.parts import parts_for
from ultra_prune.pruning.record import is_pruned

PREFIX = colorstr("ultra-prune:")
SPARSITY_PREFIX = "sparsity/"  # the results.csv / logger keys of the parts' statistics


def _run_parts(trainer, hook: str) -> None:
    if isinstance(trainer, SlimTrainer):  # a Model's callbacks outlive its run: a later stock run may call them
        trainer.run_parts(hook)


def _epoch_start(trainer):
    _run_parts(trainer, "epoch_start")


def _batch_start(trainer):
    _run_parts(trainer, "batch_start")


def _epoch_end(trainer):
    _run_parts(trainer, "epoch_end")


# ultralytics callbacks -> what runs the parts' hooks: module functions, so a trainer that receives callbacks already
# holding them (a DDP worker: 8.4.140+ pickles the parent's; a Model trained again) adds none twice
CALLBACKS = {"on_train_epoch_start": _epoch_start, "on_train_batch_start": _batch_start, "on_train_epoch_end": _epoch_end}


def loss_scale(scaler) -> float | torch.Tensor:
    """The AMP loss scale the gradients still carry: the scaler's own tensor on the device (``get_scale()`` would
    wait for the device every step), or 1.0 without AMP."""
    if scaler is None or not scaler.is_enabled():
        return 1.0
    scale = getattr(scaler, "_scale", None)
    return scale if isinstance(scale, torch.Tensor) else scaler.get_scale()


class SlimTrainer:
    """The ultra-prune piece of a stock task trainer (put first in the bases): ``sparsity*`` (manual-lambda BN-L1
    sparse training), ``sparsity_target`` (sparse training to a share of channels or GFLOPs), ``prune*`` (prune,
    then fine-tune) and ``distill_model`` (logit distillation, detect) arguments, and a ``get_model`` that keeps a
    pruned architecture instead of rebuilding it."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        from ultra_prune.patches import apply

        apply()  # DDP workers import only this module
        if isinstance(cfg, dict):  # DDP temp files pass a copy of DEFAULT_CFG_DICT taken before any patch
            cfg = {**DEFAULTS, **cfg}  # (a worker's arguments were validated in the process that launched it)
        elif not checked_already():  # built by other code than Model.train (which validates at its door)
            validate({**(vars(cfg) if hasattr(cfg, "__dict__") else {}), **(overrides or {})})
        super().__init__(cfg, overrides, _callbacks)
        a = self.args
        a.distill_loss = resolve_distill_loss(a.distill_loss, a.task)
        if a.distill_model and a.distill_loss == "logit" and a.task != "detect":
            raise UltraPruneError(
                f"distill_loss=logit is built for detection heads, not task '{a.task}'; use distill_loss=feature "
                "(ultralytics' own distillation, 8.4.80+) or drop distill_model="
            )
        self.parts = parts_for(a)
        for event, callback in CALLBACKS.items():
            if self.parts and callback not in self.callbacks.get(event, []):
                self.add_callback(event, callback)

    def run_parts(self, hook: str, *args) -> None:
        """Call ``hook`` of every part with this trainer."""
        for part in self.parts:
            getattr(part, hook)(self, *args)

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Return the model to train: a pruned ``weights`` as itself, else the stock rebuild; then prune if asked."""
        if is_pruned(weights):
            model = trainable_copy(weights)
            nc = self.data["nc"]
            if getattr(model.model[-1], "nc", nc) != nc:  # Classify has no nc: the stock trainer resizes it
                LOGGER.info(f"{PREFIX} re-initialising class convs for nc={nc} (checkpoint had {model.model[-1].nc})")
                reset_classes(model, nc)
            if verbose and RANK in {-1, 0}:
                n = sum(p.numel() for p in model.parameters())
                LOGGER.info(f"{PREFIX} training the pruned architecture as saved ({n:,} parameters)")
                model.info()
        else:
            model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if self.args.prune and not self.args.resume:
            cfg = PruneConfig.of(self.args.prune, vars(self.args))
            model, report = prune_for_training(model, cfg, self.args.data, self.device, verbose=RANK in {-1, 0})
            if report is not None:
                self.args.prune_round = report.prune_round  # 'auto' as it was resolved, recorded in train_args
                write = functools.partial(write_pruned, model, report)
                if RANK == -1 and getattr(self, "ddp", False):  # the DDP launch clears the run folder first: the
                    self.add_callback("on_pretrain_routine_start", write)  # workers get this callback (8.4.140+)
                else:
                    write(self)
        return model

    def _setup_train(self, *args, **kwargs):
        """The stock set-up, between the parts' ``setup_start`` and ``setup_end``."""
        self.run_parts("setup_start")
        super()._setup_train(*args, **kwargs)
        self.run_parts("setup_end")

    def build_optimizer(self, model, *args, **kwargs):
        """The stock optimizer, shown to the parts (a proximal step hooks onto it)."""
        optimizer = super().build_optimizer(model, *args, **kwargs)
        self.run_parts("optimizer_built", optimizer, unwrap(model))
        return optimizer

    def optimizer_step(self):
        """The parts' ``before_step`` on the still-scaled gradients, the stock unscale/clip/step/EMA, then their
        ``after_step``."""
        if not self.parts:
            return super().optimizer_step()
        self.run_parts("before_step", loss_scale(getattr(self, "scaler", None)))
        super().optimizer_step()
        self.run_parts("after_step")

    def save_model(self):
        """The stock checkpoints, with the parts' state on the saved EMA (``TRAINING_STATE``), so a resumed run
        goes on as this one would have."""
        states = {type(part).__name__: part.state() for part in self.parts}
        ema = getattr(getattr(self, "ema", None), "ema", None)
        if ema is None or not any(v is not None for v in states.values()):
            return super().save_model()
        setattr(ema, TRAINING_STATE, states)
        try:
            return super().save_model()
        finally:
            delattr(ema, TRAINING_STATE)

    def resume_training(self, ckpt):
        """The stock resume, then each part takes back the state its checkpoint carries."""
        super().resume_training(ckpt)
        if ckpt and getattr(self, "resume", False):
            saved = ckpt.get("ema") or ckpt.get("model")
            states = getattr(saved, TRAINING_STATE, None) or {}
            for part in self.parts:
                if states.get(type(part).__name__) is not None:
                    part.resume(self, states[type(part).__name__])

    def validate(self):
        """The stock validation; best.pt is picked only among epochs every part keeps (with ``sparsity_target``:
        those whose chosen channels are zero, the model pruning keeps)."""
        metrics, fitness = super().validate()
        if not all(part.keeps_best(self) for part in self.parts):
            self.best_fitness = None
        return metrics, fitness

    def save_metrics(self, metrics):
        """Add the parts' statistics of the epoch (of the EMA model that gets saved) to results.csv and to the
        metrics the loggers (TensorBoard, W&B, MLflow, ...) read at ``on_fit_epoch_end``. They always go last, so
        every column holds its own value in every epoch, validated or not (``val=False`` carries the previous
        epoch's ``trainer.metrics``, ours included, into the next row)."""
        model = self.ema.ema if getattr(self, "ema", None) else unwrap(self.model)
        stats = {k: v for part in self.parts for k, v in part.metrics(self, model).items()}
        if stats:
            metrics = {**{k: v for k, v in metrics.items() if not k.startswith(SPARSITY_PREFIX)}, **stats}
            if isinstance(getattr(self, "metrics", None), dict):
                self.metrics.update(stats)
        super().save_metrics(metrics)

    def plot_metrics(self):
        """The stock results.png, then the parts' figures (sparsity.png, gamma_hist.png), registered like
        ultralytics' own plots."""
        super().plot_metrics()
        for part in self.parts:
            for figure in part.figures(self):
                if registers_plots(self):
                    self.on_plot(figure)


STOCK = task_trainers()


class SlimDetectionTrainer(SlimTrainer, STOCK["detect"]):
    """DetectionTrainer with ultra-prune's arguments."""


class SlimSegmentationTrainer(SlimTrainer, STOCK["segment"]):
    """SegmentationTrainer with ultra-prune's arguments."""


class SlimPoseTrainer(SlimTrainer, STOCK["pose"]):
    """PoseTrainer with ultra-prune's arguments."""


class SlimClassificationTrainer(SlimTrainer, STOCK["classify"]):
    """ClassificationTrainer with ultra-prune's arguments."""


TRAINERS = {"detect": SlimDetectionTrainer, "segment": SlimSegmentationTrainer, "pose": SlimPoseTrainer,
            "classify": SlimClassificationTrainer}

if "obb" in STOCK:  # ultralytics >= 8.1

    class SlimOBBTrainer(SlimTrainer, STOCK["obb"]):
        """OBBTrainer with ultra-prune's arguments."""

    TRAINERS["obb"] = SlimOBBTrainer


@hookimpl(trylast=True)
def ultra_prune_trainer(task):
    return TRAINERS.get(task)

"""The ultra-prune trainers: sparse (BN-L1) training, one-shot pruning and pruned-model fine-tuning.

One shared piece, ``SlimTrainer``, applied to each stock task trainer (detect, segment, pose, obb, classify); the
classes live in this importable module, so DDP workers can rebuild them. It is also the plugin that hands them to
``Model.train``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from ultralytics.models import yolo
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK, colorstr

from ultra_prune.args import EXTRA_DEFAULTS, resolve_distill_loss, validate
from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl
from ultra_prune.pruning import is_pruned
from ultra_prune.sparsity import BNSparsity, gamma_values, stats_of
from ultra_prune.target import FREEZE, OBSERVE, ZERO, SparsityTarget, envelope
from ultra_prune.patches.compat import log

PREFIX = colorstr("ultra-prune:")
SPARSITY_PREFIX = "sparsity/"  # the results.csv / logger keys of the sparsity statistics
STALL_EPOCHS = 3  # epochs after which sparse training that has not moved gets a warning


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DDP (``module``) or torch.compile (``_orig_mod``) wrapper."""
    return getattr(model, "_orig_mod", getattr(model, "module", model))


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


class SlimTrainer:
    """The ultra-prune piece of a stock task trainer (put first in the bases): ``sparsity*`` (manual-lambda BN-L1
    sparse training), ``sparsity_target`` (sparse training to a share of channels or GFLOPs), ``prune*`` (prune,
    then fine-tune) and ``distill_model`` (logit distillation, detect) arguments, and a ``get_model`` that keeps a
    pruned architecture instead of rebuilding it."""

    def __init__(self, cfg=DEFAULT_CFG, overrides=None, _callbacks=None):
        from ultra_prune.patches import apply

        apply()  # DDP workers import only this module
        if isinstance(cfg, dict):  # DDP temp files pass a copy of DEFAULT_CFG_DICT taken before any patch
            cfg = {**EXTRA_DEFAULTS, **cfg}
        validate(overrides or {})
        super().__init__(cfg, overrides, _callbacks)
        validate({k: v for k, v in vars(self.args).items() if k != "resume"})
        a = self.args
        a.distill_loss = resolve_distill_loss(a.distill_loss, a.task)
        if a.distill_model and a.distill_loss == "logit" and a.task != "detect":
            raise UltraPruneError(
                f"distill_loss=logit is built for detection heads, not task '{a.task}'; use distill_loss=feature "
                "(ultralytics' own distillation, 8.4.80+) or drop distill_model="
            )
        self.sparsity = (
            BNSparsity(a.sparsity, a.sparsity_beta, a.sparsity_decay, a.epochs) if a.sparsity or a.sparsity_beta else None
        )
        self.target = (
            SparsityTarget(a.sparsity_target, a.prune_by, a.prune_round, a.prune_min, a.imgsz)
            if a.sparsity_target else None
        )
        self.gamma_first = self.gamma_last = self.gamma_groups = None
        self.stats_first = None
        self.stall_warned = self.target_warned = False
        self.batch_i = 0
        self.choice_note = None  # the last (re)choice of the target's channels, logged at the epoch's end
        if self.target:
            self.add_callback("on_train_epoch_start", lambda trainer: trainer.choose_target_channels())
            self.add_callback("on_train_batch_start", lambda trainer: setattr(trainer, "batch_i", trainer.batch_i + 1))
            self.add_callback("on_train_epoch_end", lambda trainer: trainer.shrink_target_channels())

    # --- model: keep pruned architectures, prune on request --------------------------------------------------
    def get_model(self, cfg=None, weights=None, verbose=True):
        """Return the model to train: a pruned ``weights`` as itself, else the stock rebuild; then prune if asked."""
        if is_pruned(weights):
            model = copy.deepcopy(weights).float()
            for p in model.parameters():
                p.requires_grad_(True)
            if getattr(model.model[-1], "nc", self.data["nc"]) != self.data["nc"]:  # Classify: the stock trainer
                LOGGER.info(f"{PREFIX} re-initialising class convs for nc={self.data['nc']} (checkpoint had {model.model[-1].nc})")
                reset_classes(model, self.data["nc"])
            if verbose and RANK in {-1, 0}:
                n = sum(p.numel() for p in model.parameters())
                LOGGER.info(f"{PREFIX} training the pruned architecture as saved ({n:,} parameters)")
                model.info()
        else:
            model = super().get_model(cfg=cfg, weights=weights, verbose=verbose)
        if self.args.prune and not self.args.resume:
            model = self.prune_before_training(model)
        return model

    def prune_before_training(self, model: nn.Module) -> nn.Module:
        """One-shot ``prune=``: prune ``model``, save it and its report in the run folder, return it."""
        from ultra_prune.api import prune

        main = RANK in {-1, 0}
        out = self.wdir / "pruned.pt" if main else None
        pruned, report = prune(model, self.args.prune, self.args.prune_round, self.args.prune_min, prune_out=out,
                               exist_ok=True, imgsz=self.args.imgsz, prune_by=self.args.prune_by, verbose=main,
                               prune_importance=self.args.prune_importance, data=self.args.data,
                               device=self.device, report_files=False)
        if pruned is None:
            return model
        if main:
            report.save(self.save_dir / "prune_report.txt")
            report.save(self.save_dir / "prune_report.json")
        return pruned

    # --- distillation ---------------------------------------------------------------------------------------
    def _setup_train(self, *args, **kwargs):
        """The stock set-up; with ``distill_model`` and ``distill_loss=logit``, ultralytics' own distillation
        wrapper (8.4.80+) stays out and the logit distillation goes on the student's criterion, after the EMA copy
        is made, so the teacher never enters the EMA or a checkpoint."""
        teacher = self.args.distill_model if self.args.distill_loss == "logit" else None
        if teacher:
            self.args.distill_model = None
        try:
            super()._setup_train(*args, **kwargs)
        finally:
            if teacher:
                self.args.distill_model = teacher
        if teacher:
            from ultra_prune.distill import DistillCriterion, load_teacher

            model = _unwrap(self.model)
            head = model.model[-1]
            model.criterion = DistillCriterion(model.init_criterion(), load_teacher(teacher, model),
                                               getattr(head, "reg_max", 16), head.nc)
            if RANK in {-1, 0}:
                LOGGER.info(f"{PREFIX} distilling from {teacher} (logit: class scores + box-edge distributions)")

    # --- sparse training ------------------------------------------------------------------------------------
    def progress(self) -> float:
        """Training progress in [0, 1]: epochs done plus the fraction of this epoch's batches started."""
        nb = max(len(self.train_loader), 1) if getattr(self, "train_loader", None) is not None else 1
        return (self.epoch + min(self.batch_i, nb) / nb) / max(self.epochs, 1)

    def choose_target_channels(self, epoch_start: bool = True) -> None:
        """(Re)choose the channels ``sparsity_target`` drives to zero: first once OBSERVE of the run has gathered
        scores, then at every epoch start until the choice freezes. The log line waits for the epoch's end, so
        it never lands inside the progress bar."""
        if epoch_start:
            self.batch_i = 0
        p, first = self.progress(), not self.target.chosen
        if p < OBSERVE or (not first and (p >= FREEZE or not epoch_start)):
            return
        self.target.choose(_unwrap(self.model))
        if first:  # a resumed run's weights already follow the envelope up to here
            self.target.scale = envelope(p)
        self.choice_note = (f"sparsity_target={self.args.sparsity_target} (prune_by={self.args.prune_by}): "
                            f"{self.target.chosen_count()} BatchNorm channels chosen to go to zero by "
                            f"{ZERO:.0%} of training")

    def optimizer_step(self):
        """Add lam*sign(gamma) to the still-scaled gradients (grad mode), then the stock unscale/clip/step/EMA;
        with ``sparsity_target``, then scale the chosen channels of the model and its EMA along the schedule."""
        scaler = getattr(self, "scaler", None)
        scale = scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0
        if self.sparsity and self.args.sparsity_mode == "grad":
            self.sparsity.add_l1_grad(_unwrap(self.model), self.epoch, scale)
        if self.target and self.progress() < FREEZE:  # scores for the next choice
            self.target.observe(_unwrap(self.model), scale)
            self.choose_target_channels(epoch_start=False)
        super().optimizer_step()
        if self.target:
            self.shrink_target_channels()

    def shrink_target_channels(self) -> None:
        """Scale the chosen channels of the model and its EMA to the schedule's value at this point of training
        (after every optimizer step, and at every epoch end: with few batches and a large ``nbs`` an epoch may
        end without a step, so the first choice may be due here too)."""
        if not self.target.chosen:
            self.choose_target_channels(epoch_start=False)
        if self.target.chosen:
            ema = getattr(self, "ema", None)
            self.target.step([_unwrap(self.model)] + ([ema.ema] if ema else []), self.progress())

    def build_optimizer(self, model, *args, **kwargs):
        """The stock optimizer; in prox/polar mode with a post-step hook that soft-thresholds gamma/beta."""
        optimizer = super().build_optimizer(model, *args, **kwargs)
        if self.sparsity and self.args.sparsity_mode in {"prox", "polar"}:
            self.sparsity.bind(_unwrap(model))
            optimizer.register_step_post_hook(self.proximal_hook)
        return optimizer

    def proximal_hook(self, optimizer, _args=None, _kwargs=None) -> None:
        """Optimizer post-step hook (prox/polar): soft-threshold gamma/beta, unless AMP skipped the step. A fused
        optimizer (ultralytics' AdamW on CUDA) is stepped even then, with ``found_inf`` set, and changes nothing."""
        found_inf = getattr(optimizer, "found_inf", None)
        if found_inf is not None and found_inf.item():
            return
        self.sparsity.proximal_step(optimizer, self.epoch, self.args.sparsity_mode == "polar")

    def validate(self):
        """The stock validation. With ``sparsity_target``, best.pt is picked only among epochs whose chosen channels
        are already zero: before that, a checkpoint is not the model that pruning keeps."""
        metrics, fitness = super().validate()
        if self.target and not self.target.zeroed():
            self.best_fitness = None
        return metrics, fitness

    def save_metrics(self, metrics):
        """Add the epoch's sparsity statistics (of the EMA model that gets saved) to results.csv and to the
        metrics the loggers (TensorBoard, W&B, MLflow, ...) read at ``on_fit_epoch_end``. They always go last, so
        every column holds its own value in every epoch, validated or not (``val=False`` carries the previous
        epoch's ``trainer.metrics``, ours included, into the next row)."""
        if self.sparsity or self.target:
            model = self.ema.ema if getattr(self, "ema", None) else _unwrap(self.model)
            self.gamma_last = gamma_values(model)
            stats = stats_of(self.gamma_last)
            if self.stats_first is None:
                self.stats_first, self.gamma_first = stats, self.gamma_last
            if self.target:
                stats = {"sparsity/target": self.args.sparsity_target, "sparsity/reached": self.target.reached(model),
                         **stats}
                self.gamma_groups = self.target.groups(model)
                head = f"target={stats['sparsity/target']:g} reached={stats['sparsity/reached']:.1%} ({self.args.prune_by})"
                if self.choice_note:
                    LOGGER.info(f"{PREFIX} {self.choice_note}")
                    self.choice_note = None
                self.warn_if_short(stats)
            else:
                head = f"lambda={self.args.sparsity * self.sparsity.factor(self.epoch):.3g}"
                self.warn_if_stalled(stats)
            LOGGER.info(
                f"{PREFIX} {head} mean|γ|={stats['sparsity/gamma_mean']:.4f} "
                f"|γ|<1e-2: {stats['sparsity/gamma<0.01']:.1%} |γ|<1e-3: {stats['sparsity/gamma<0.001']:.1%}"
            )
            metrics = {**{k: v for k, v in metrics.items() if not k.startswith(SPARSITY_PREFIX)}, **stats}
            if isinstance(getattr(self, "metrics", None), dict):
                self.metrics.update(stats)
        super().save_metrics(metrics)

    def warn_if_short(self, stats: dict) -> None:
        """One warning when the chosen channels are at zero yet the target is not reached (floors in the way)."""
        if self.target_warned or self.progress() < ZERO or stats["sparsity/reached"] >= self.args.sparsity_target - 1e-6:
            return
        self.target_warned = True
        log("warning",
            f"{PREFIX} sparsity_target={self.args.sparsity_target:g} cannot be reached: zeroing every channel the "
            f"floors allow removes {stats['sparsity/reached']:.1%} of the {self.args.prune_by} "
            f"(prune_min={self.args.prune_min}, prune_round={self.args.prune_round}). "
            f"Lower prune_min= and prune_round= (e.g. prune_min=4 prune_round=4), or ask for a smaller target")

    def warn_if_stalled(self, stats: dict) -> None:
        """One warning when, after STALL_EPOCHS epochs, |gamma| has barely moved toward zero."""
        if self.stall_warned or self.epoch + 1 < STALL_EPOCHS or not self.sparsity.lam:
            return
        first, now = self.stats_first, stats
        moved = now["sparsity/gamma<0.01"] - first["sparsity/gamma<0.01"]
        shrunk = 1 - now["sparsity/gamma_mean"] / max(first["sparsity/gamma_mean"], 1e-12)
        if moved < 0.01 and shrunk < 0.05:
            self.stall_warned = True
            log("warning",
                f"{PREFIX} after {self.epoch + 1} epochs sparse training has barely moved γ "
                f"(|γ|<1e-2: {now['sparsity/gamma<0.01']:.1%}, mean |γ| down {shrunk:.1%}). "
                f"Raise sparsity= (e.g. x2-x10), use sparsity_mode=polar, and set optimizer=AdamW lr0=0.01 explicitly "
                f"(optimizer=auto picks a learning rate too small to move γ in short runs)."
            )

    def plot_metrics(self):
        """The stock results.png; when training sparse also sparsity.png (the sparsity columns of results.csv per
        epoch) and gamma_hist.png (|gamma|, first vs last epoch), registered like ultralytics' own plots."""
        super().plot_metrics()
        if not (self.sparsity or self.target):
            return
        from ultra_prune.plots import plot_gamma_histograms, plot_sparsity

        figures = [plot_sparsity(self.csv, self.save_dir / "sparsity.png")]
        if self.gamma_first is not None:
            series = {"first epoch": self.gamma_first, "last epoch": self.gamma_last}
            if self.target:
                chosen, rest = self.gamma_groups
                series = {"first epoch": self.gamma_first, "last epoch, chosen": chosen, "last epoch, kept": rest}
            figures.append(plot_gamma_histograms(series, self.save_dir / "gamma_hist.png"))
        if hasattr(self, "on_plot"):  # 8.0.x before plots were registered
            for f in filter(None, figures):
                self.on_plot(f)


class SlimDetectionTrainer(SlimTrainer, yolo.detect.DetectionTrainer):
    """DetectionTrainer with ultra-prune's arguments."""


class SlimSegmentationTrainer(SlimTrainer, yolo.segment.SegmentationTrainer):
    """SegmentationTrainer with ultra-prune's arguments."""


class SlimPoseTrainer(SlimTrainer, yolo.pose.PoseTrainer):
    """PoseTrainer with ultra-prune's arguments."""


class SlimClassificationTrainer(SlimTrainer, yolo.classify.ClassificationTrainer):
    """ClassificationTrainer with ultra-prune's arguments."""


TRAINERS = {"detect": SlimDetectionTrainer, "segment": SlimSegmentationTrainer, "pose": SlimPoseTrainer,
            "classify": SlimClassificationTrainer}

if hasattr(yolo, "obb"):  # ultralytics >= 8.1

    class SlimOBBTrainer(SlimTrainer, yolo.obb.OBBTrainer):
        """OBBTrainer with ultra-prune's arguments."""

    TRAINERS["obb"] = SlimOBBTrainer


@hookimpl(trylast=True)
def ultra_prune_trainer(task):
    return TRAINERS.get(task)

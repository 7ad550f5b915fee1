"""The jobs of ultra-prune's trainer, each a small part with one interface.

``SlimTrainer`` keeps only ultralytics' overrides and forwards them to its parts: manual-λ sparse training
(``ManualSparsity``), sparse training to a target (``TargetSchedule``) and logit distillation (``LogitDistillation``).
A part reads what it needs of the trainer it is handed (``model``, ``ema``, ``epoch``, ``epochs``, ``train_loader``,
``args``) and knows nothing of ultralytics' classes, so each is testable with a stand-in.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ultra_prune.train.architecture import unwrap
from ultra_prune.config.settings import PruneConfig
from ultra_prune.engine.once import resolve_round
from ultra_prune.io.logs import log
from ultra_prune.slimming.sparsity import BNSparsity, gamma_values, stats_of
from ultra_prune.pruning.importance import TaylorScores
from ultra_prune.slimming.target import SparsityTarget

STALL_EPOCHS = 3  # epochs after which manual sparse training that has not moved gets a warning
PREFIX = "ultra-prune:"



class Part:
    """One job of the trainer. Every hook does nothing unless a part overrides it."""

    def setup_start(self, trainer) -> None:
        """Before ultralytics' ``_setup_train``."""

    def setup_end(self, trainer) -> None:
        """After it: the model, its EMA, the optimizer and the loaders exist."""

    def model_replaced(self, trainer) -> None:
        """The trainer's model and EMA were just replaced by pruned copies (``prune_at_zero``)."""

    def optimizer_built(self, trainer, optimizer, model: nn.Module) -> None:
        """``optimizer`` was just built for ``model``."""

    def epoch_start(self, trainer) -> None: ...

    def batch_start(self, trainer) -> None: ...

    def before_step(self, trainer, grad_scale: float | torch.Tensor) -> None:
        """The step's gradients are in place, still multiplied by the AMP loss scale ``grad_scale`` (a tensor on
        the device under AMP: reading it would wait for the device)."""

    def after_step(self, trainer) -> None:
        """After the optimizer step and the EMA update."""

    def epoch_end(self, trainer) -> None: ...

    def state(self) -> dict | None:
        """What this part needs to resume exactly as it would have gone on (saved with each checkpoint)."""
        return None

    def resume(self, trainer, state: dict) -> None:
        """Take back what ``state`` saved, when a run resumes."""

    def keeps_best(self, trainer) -> bool:
        """Whether this epoch's model may become best.pt."""
        return True

    def metrics(self, trainer, model: nn.Module) -> dict:
        """This epoch's statistics of ``model`` (the EMA that gets saved) for results.csv and the loggers; a part
        logs its one line here."""
        return {}

    def figures(self, trainer) -> list[Path]:
        """The plots it saved in the run folder at the end."""
        return []


def progress(trainer, batches_started: int) -> float:
    """Training progress in [0, 1]: epochs done plus the fraction of this epoch's batches started."""
    loader = getattr(trainer, "train_loader", None)
    nb = max(len(loader), 1) if loader is not None else 1
    return (trainer.epoch + min(batches_started, nb) / nb) / max(trainer.epochs, 1)


class GammaStats:
    """|gamma| statistics per epoch (``sparsity/*`` columns) and the plots of both sparse parts."""

    def __init__(self):
        self.first = self.last = None  # |gamma| of the first and the latest epoch's model
        self.stats_first = None

    def epoch_stats(self, model: nn.Module) -> dict:
        self.last = gamma_values(model)
        stats = stats_of(self.last)
        if self.stats_first is None:
            self.stats_first, self.first = stats, self.last
        return stats

    @staticmethod
    def line(head: str, stats: dict) -> str:
        return (f"{PREFIX} {head} mean|γ|={stats['sparsity/gamma_mean']:.4f} |γ|<1e-2: {stats['sparsity/gamma<0.01']:.1%} "
                f"|γ|<1e-3: {stats['sparsity/gamma<0.001']:.1%}")

    def plots(self, trainer, series: dict) -> list[Path]:
        from ultra_prune.io.plots import plot_gamma_histograms, plot_sparsity

        figures = [plot_sparsity(trainer.csv, trainer.save_dir / "sparsity.png")]
        if self.first is not None:
            figures.append(plot_gamma_histograms(series, trainer.save_dir / "gamma_hist.png"))
        return [f for f in figures if f]


class ManualSparsity(Part):
    """``sparsity=λ``: the L1 penalty on BatchNorm γ (and β), as a gradient term (``grad``) or a proximal step after
    each optimizer step (``prox``/``polar``), with a warning when γ has barely moved after a few epochs."""

    def __init__(self, lam: float, lam_beta: float, decay: float, epochs: int, mode: str):
        self.l1 = BNSparsity(lam, lam_beta, decay, epochs)
        self.mode = mode
        self.gamma = GammaStats()
        self.warned = False

    def optimizer_built(self, trainer, optimizer, model):
        if self.mode in {"prox", "polar"}:
            self.l1.bind(model)
            optimizer.register_step_post_hook(lambda opt, _args=None, _kwargs=None: self.proximal(opt, trainer.epoch))

    def proximal(self, optimizer, epoch: int) -> None:
        """Soft-threshold γ/β, unless AMP skipped the step. A fused optimizer (ultralytics' AdamW on CUDA) is stepped
        even then, with the device flag ``found_inf`` set, and changes nothing: the step is then masked on the
        device by that flag, with no sync."""
        self.l1.proximal_step(optimizer, epoch, self.mode == "polar", skip=getattr(optimizer, "found_inf", None))

    def before_step(self, trainer, grad_scale):
        if self.mode == "grad":
            self.l1.add_l1_grad(unwrap(trainer.model), trainer.epoch, grad_scale)

    def metrics(self, trainer, model):
        stats = self.gamma.epoch_stats(model)
        trainer_log(self.gamma.line(f"lambda={self.l1.lam * self.l1.factor(trainer.epoch):.3g}", stats))
        self.warn_if_stalled(trainer.epoch, stats)
        return stats

    def warn_if_stalled(self, epoch: int, stats: dict) -> None:
        """One warning when, after STALL_EPOCHS epochs, |gamma| has barely moved toward zero."""
        if self.warned or epoch + 1 < STALL_EPOCHS or not self.l1.lam:
            return
        first = self.gamma.stats_first
        moved = stats["sparsity/gamma<0.01"] - first["sparsity/gamma<0.01"]
        shrunk = 1 - stats["sparsity/gamma_mean"] / max(first["sparsity/gamma_mean"], 1e-12)
        if moved < 0.01 and shrunk < 0.05:
            self.warned = True
            log("warning",
                f"{PREFIX} after {epoch + 1} epochs sparse training has barely moved γ "
                f"(|γ|<1e-2: {stats['sparsity/gamma<0.01']:.1%}, mean |γ| down {shrunk:.1%}). "
                f"Raise sparsity= (e.g. x2-x10), use sparsity_mode=polar, and set optimizer=AdamW lr0=0.01 explicitly "
                f"(optimizer=auto picks a learning rate too small to move γ in short runs).")

    def figures(self, trainer):
        return self.gamma.plots(trainer, {"first epoch": self.gamma.first, "last epoch": self.gamma.last})


class TargetSchedule(Part):
    """``sparsity_target=``: the run's own gradients score every channel until ``observe`` of training, then the
    pruner's selection chooses the target's channels (again at each epoch start until ``freeze``), and after every
    step their γ and β follow the envelope to exactly 0 at ``zero``, in the model and its EMA (``target.Schedule``).
    With ``remove``, the first epoch end past ``zero`` removes them from both, and the run trains the smaller model
    on."""

    def __init__(self, cfg: PruneConfig, remove: bool = False):
        self.cfg, self.remove = cfg, remove
        self.removed = None  # once removed: the share of the budget the removal took (it is fixed from then on)
        self.target = SparsityTarget(cfg.ratio, cfg.by, cfg.round_to, cfg.floor, cfg.imgsz)
        self.batches = 0  # batches started in this epoch
        self.note = None  # the last choice, logged with the epoch's summary (never inside the progress bar)
        self.warned = False
        self.gamma = GammaStats()
        self.groups = None  # |gamma| of the chosen and the kept channels at the last epoch

    def progress(self, trainer) -> float:
        return progress(trainer, self.batches)

    def setup_end(self, trainer):
        """Resolve ``prune_round=auto`` (recorded in the run's args, so the checkpoint's own prune uses it) and,
        under ``prune_by=latency``, measure the model's latency table now, outside the training progress bar."""
        from ultralytics.utils import RANK

        from ultra_prune.train.architecture import rank_zero_first

        with rank_zero_first():
            self.cfg = resolve_round(self.cfg, unwrap(trainer.model), trainer.device, verbose=RANK in {-1, 0})
            if self.cfg.by == "latency":
                from ultra_prune.latency.table import table_for

                table = table_for(self.cfg, trainer.device, verbose=RANK in {-1, 0})
                table.model(unwrap(trainer.model), self.cfg.imgsz)
                self.target.latency = table.model
        self.target.round_to = trainer.args.prune_round = self.cfg.round_to

    def choose(self, trainer, again: bool) -> None:
        """Make the first choice once ``observe`` of the run is past; ``again`` (an epoch start): also remake an
        existing one until ``freeze``."""
        p, first, plan = self.progress(trainer), not self.target.chosen, self.target.schedule
        if self.removed is not None or p < plan.observe or not (first or (again and p < plan.freeze)):
            return
        self.target.choose(unwrap(trainer.model))
        if first:  # a resumed run's weights already follow the envelope up to here
            self.target.scale = plan.envelope(p)
        self.note = (f"sparsity_target={self.cfg.ratio} (prune_by={self.cfg.by}): {self.target.chosen_count()} "
                     f"BatchNorm channels chosen to go to zero by {plan.zero:.0%} of training")

    def shrink(self, trainer) -> None:
        """Scale the chosen channels of the model and its EMA to the envelope's value now (after every step, and
        at every epoch end: with few batches and a large ``nbs`` an epoch may end without a step, so the first
        choice may be due there too)."""
        self.choose(trainer, again=False)
        if self.target.chosen:
            ema = getattr(trainer, "ema", None)
            self.target.step([unwrap(trainer.model)] + ([ema.ema] if ema else []), self.progress(trainer))

    def epoch_start(self, trainer):
        self.batches = 0
        self.choose(trainer, again=True)

    def batch_start(self, trainer):
        self.batches += 1

    def before_step(self, trainer, grad_scale):
        if self.removed is None and self.progress(trainer) < self.target.schedule.freeze:  # for the next choice
            self.target.observe(unwrap(trainer.model), grad_scale)
            self.choose(trainer, again=False)

    def after_step(self, trainer):
        self.shrink(trainer)

    def epoch_end(self, trainer):
        self.shrink(trainer)
        if self.remove and self.removed is None and self.target.zeroed():
            self.remove_channels(trainer)

    def remove_channels(self, trainer) -> None:
        """Prune the zeroed channels out of the model and its EMA now (``architecture.remove_zeroed``); the rest of
        the run trains the smaller model, and its last.pt / best.pt are pruned checkpoints."""
        from ultra_prune.train.architecture import remove_zeroed
        from ultra_prune.pruning import MARKER

        if torch.distributed.is_available() and torch.distributed.is_initialized() or hasattr(trainer.model, "_orig_mod"):
            self.remove = False
            log("warning", f"{PREFIX} prune_at_zero is not supported under DDP or compile=True yet: the chosen channels "
                           "stay at zero and the run ends unpruned; prune its last.pt with yolo prune")
            return
        reached = self.target.reached(trainer.ema.ema)
        before = sum(p.numel() for p in unwrap(trainer.model).parameters())
        info = remove_zeroed(trainer, self.cfg.by, self.cfg.round_to, self.cfg.floor, self.cfg.imgsz,
                             self.target.latency)
        if info is None:
            self.remove = False
            log("warning", f"{PREFIX} prune_at_zero: the model and its EMA would prune differently; the chosen channels "
                           "stay at zero and the run ends unpruned (prune its last.pt with yolo prune)")
            return
        self.removed, self.target.chosen = reached, {}
        for m in (unwrap(trainer.model), trainer.ema.ema):
            getattr(m, MARKER)["history"][-1]["removed_in_run"] = True
        after = sum(p.numel() for p in unwrap(trainer.model).parameters())
        trainer.run_parts("model_replaced")
        self.note = (f"removed the {info['removed_channels']} zeroed channels after epoch {trainer.epoch + 1} "
                     f"({before:,} -> {after:,} parameters); training the pruned model on")

    def keeps_best(self, trainer):
        return self.target.zeroed() or self.removed is not None

    def state(self):
        """The scores gathered since the last choice, the choice and the envelope's value: a resumed run then
        makes the choice an uninterrupted one makes."""
        t = self.target
        return {"taylor": {k: v.cpu() for k, v in t.taylor.items()}, "chosen": {k: v.cpu() for k, v in t.chosen.items()},
                "scale": t.scale, "removed": self.removed}

    def resume(self, trainer, state):
        """The saved scores go back to the model's device (they are saved on the CPU); the choice stays there."""
        device = next(unwrap(trainer.model).parameters()).device
        self.target.taylor = TaylorScores(state["taylor"]).to(device)
        self.target.chosen, self.target.scale = dict(state["chosen"]), state["scale"]
        self.removed = state.get("removed")

    def metrics(self, trainer, model):
        reached = self.target.reached(model) if self.removed is None else self.removed
        stats = {"sparsity/target": self.cfg.ratio, "sparsity/reached": reached, **self.gamma.epoch_stats(model)}
        self.groups = self.target.groups(model)
        if self.note:
            trainer_log(f"{PREFIX} {self.note}")
            self.note = None
        trainer_log(self.gamma.line(f"target={self.cfg.ratio:g} reached={reached:.1%} ({self.cfg.by})", stats))
        self.warn_if_short(trainer, reached)
        return stats

    def warn_if_short(self, trainer, reached: float) -> None:
        """One warning when the chosen channels are at zero yet the target is not reached (floors in the way)."""
        if self.warned or self.progress(trainer) < self.target.schedule.zero or reached >= self.cfg.ratio - 1e-6:
            return
        self.warned = True
        log("warning",
            f"{PREFIX} sparsity_target={self.cfg.ratio:g} cannot be reached: zeroing every channel the floors allow "
            f"removes {reached:.1%} of the {self.cfg.by} (prune_min={self.cfg.floor}, prune_round={self.cfg.round_to}). "
            "Lower prune_min= and prune_round= (e.g. prune_min=4 prune_round=4), or ask for a smaller target")

    def figures(self, trainer):
        chosen, kept = self.groups if self.groups else (None, None)
        return self.gamma.plots(trainer, {"first epoch": self.gamma.first, "last epoch, chosen": chosen,
                                          "last epoch, kept": kept})


class LogitDistillation(Part):
    """``distill_model=`` with ``distill_loss=logit``: ultralytics' own distillation wrapper (8.4.80+) stays out of
    the set-up, and the logit distillation goes on the student's criterion after the EMA copy is made, so the
    teacher never enters the EMA or a checkpoint."""

    def __init__(self, teacher: str):
        self.teacher = teacher

    def setup_start(self, trainer):
        trainer.args.distill_model = None

    def setup_end(self, trainer):
        from ultra_prune.slimming.distill import load_teacher

        trainer.args.distill_model = self.teacher
        self.loaded = load_teacher(self.teacher, unwrap(trainer.model))
        self.install(trainer)
        trainer_log(f"{PREFIX} distilling from {self.teacher} (logit: class scores + box-edge distributions)")

    def model_replaced(self, trainer):
        self.install(trainer)

    def install(self, trainer) -> None:
        """The distillation criterion on the trainer's (student) model."""
        from ultra_prune.slimming.distill import DistillCriterion

        model = unwrap(trainer.model)
        head = model.model[-1]
        model.criterion = DistillCriterion(model.init_criterion(), self.loaded, getattr(head, "reg_max", 16), head.nc)


def trainer_log(message: str) -> None:
    """``message`` through ultralytics' LOGGER from the main process only (DDP rank 0 or a single process)."""
    from ultralytics.utils import LOGGER, RANK, colorstr

    if RANK in {-1, 0}:
        LOGGER.info(message.replace(PREFIX, colorstr(PREFIX), 1))


def parts_for(args) -> list[Part]:
    """The parts a run with these (validated) arguments needs."""
    parts: list[Part] = []
    if args.sparsity or args.sparsity_beta:
        parts.append(ManualSparsity(args.sparsity, args.sparsity_beta, args.sparsity_decay, args.epochs,
                                    args.sparsity_mode))
    if args.sparsity_target:
        parts.append(TargetSchedule(PruneConfig.of(args.sparsity_target, vars(args)), bool(args.prune_at_zero)))
    if args.distill_model and args.distill_loss == "logit":
        parts.append(LogitDistillation(args.distill_model))
    return parts

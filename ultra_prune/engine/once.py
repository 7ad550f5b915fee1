"""Prune once: ``prune_once(model, cfg)`` is the pruning both the trainer (one-shot ``prune=``) and the ``prune``
command run. It writes no file; it logs the report when ``verbose``."""

from __future__ import annotations

from dataclasses import replace

from ultra_prune.config.settings import PruneConfig
from ultra_prune.engine.report import PruneReport
from ultra_prune.errors import UltraPruneError
from ultra_prune.io.device import as_device
from ultra_prune.io.logs import log
from ultra_prune.pruning import prune_model
from ultra_prune.pruning.importance import NAMED, Importance, Taylor, Zeroed

PREFIX = "ultra-prune:"


def resolve_round(cfg: PruneConfig, model=None, device=None, verbose: bool = True) -> PruneConfig:
    """``cfg`` with ``round_to='auto'`` made a number: under ``by='latency'`` the channel multiple ``model`` runs
    fastest at on the runtime (``latency.table.preferred_round``, measured once per machine and model), or a finer one
    where its floors would not let ``ratio`` of the latency go; else 8."""
    if cfg.round_to != "auto":
        return cfg
    if cfg.by != "latency":
        return replace(cfg, round_to=8)
    from ultra_prune.latency.table import offline, preferred_round, runtime_of

    runtime = runtime_of(cfg, device)
    if offline(runtime):  # timed at its kit's rounding only
        return replace(cfg, round_to=runtime.round_to)
    return replace(cfg, round_to=preferred_round(runtime, model, cfg.imgsz, cfg.batch, verbose=verbose,
                                                 reach=cfg.ratio, floor=cfg.floor))


def importance_for(model, name: str, data, imgsz: int, batch: int, device=None) -> Importance:
    """The importance the user's ``prune_importance`` names ('auto': Taylor scores from ``data`` when given, else
    'l1'); Taylor scores are gathered from ``data`` here."""
    if name == "auto":
        name = "taylor" if data else "l1"
    if name != "taylor":
        return NAMED[name]()
    if not data:
        raise UltraPruneError("prune_importance=taylor scores channels on training data, and no data= was given; "
                              "add data=<the training data> or use prune_importance=l1")
    from ultra_prune.engine.calibrate import taylor_scores

    return Taylor(taylor_scores(model, data, imgsz, batch, device=device))


def prune_once(model, cfg: PruneConfig, data=None, batch: int = 16, device=None, verbose: bool = True,
               recorded: tuple | None = None):
    """``(pruned, report)`` of ``model`` pruned by ``cfg`` (``round_to='auto'`` resolved first), or ``(None, None)``
    when nothing can be removed: ``cfg.ratio`` of the budget, ranked by ``cfg.importance`` (Taylor scores from
    ``data``). ``recorded``: ``(source, progress)`` of a sparse-target checkpoint that recorded ``cfg``; exactly the
    channels its run drove to zero are removed, with no share of live ones on top, and a warning says when they fall
    short of its target. Under ``by='latency'`` the result is checked on the runtime and the report holds the
    predicted and measured latency."""
    device = as_device(device)
    cfg = resolve_round(cfg, model, device, verbose)
    table = None
    if cfg.by == "latency":
        from ultra_prune.latency.table import offline, table_for

        table = table_for(cfg, device, verbose)
    latency, measured, zeroed = (table.model if table else None), None, recorded is not None
    if zeroed:
        from ultra_prune.slimming.target import SparsityTarget

        target = SparsityTarget(cfg.ratio, cfg.by, cfg.round_to, cfg.floor, cfg.imgsz, latency)
        warn_short_of_target(recorded[0], cfg, recorded[1], target.reached(model), target.schedule.zero)
        pruned, info = prune_model(model, 0.0, cfg.round_to, cfg.floor, cfg.by, cfg.imgsz, take_dead=True,
                                   importance=Zeroed(), latency=latency)
    else:
        importance = importance_for(model, cfg.importance, data, cfg.imgsz, batch, device)
        if table is None or offline(table.runtime):  # (an offline table: predicted only)
            pruned, info = prune_model(model, cfg.ratio, cfg.round_to, cfg.floor, cfg.by, cfg.imgsz,
                                       importance=importance, depth=cfg.depth, latency=latency)
        else:
            from ultra_prune.latency.measured import prune_to_measured

            pruned, info, measured = prune_to_measured(model, cfg, importance, table, verbose)
    if not info.pruned:
        if not zeroed:
            log_info(f"{PREFIX} nothing to prune: every prunable layer is already at its floor "
                     f"(prune_min={cfg.floor}, prune_round={cfg.round_to}); no file written. "
                     "Lower prune_min= (or prune_round=) to prune further")
        return None, None
    report = PruneReport.build(model, pruned, info, cfg.ratio, cfg.round_to, cfg.floor, cfg.imgsz, cfg.by,
                               info.prune_importance)
    if table is not None:
        if not zeroed and measured is None:  # (prune_to_measured warns of its first try)
            from ultra_prune.latency.measured import warn_latency_floor

            warn_latency_floor(cfg, *info.latency_ms, on=table.key)
        report.latency_runtime = f"{table.key}, batch {cfg.batch}{getattr(table.runtime, 'origin', '')}"
        report.latency_predicted = info.latency_ms
        if not offline(table.runtime):
            report.latency_measured = measured if not zeroed else tuple(table.whole([model, pruned], cfg.imgsz))
    return pruned, report


def log_info(message: str) -> None:
    """``message`` through ultralytics' LOGGER, its prefix in colour."""
    from ultralytics.utils import LOGGER, colorstr

    LOGGER.info(message.replace(PREFIX, colorstr(PREFIX), 1))


def announce(report: PruneReport) -> None:
    """Log what a pruning removed and its report."""
    log_info(f"{PREFIX} pruned {report.removed_channels}/{report.prunable_channels} channels\n{report.text()}")


def warn_short_of_target(source, target: PruneConfig, progress: float, reached: float, zero_at: float) -> None:
    """One warning when the channels a ``sparsity_target`` checkpoint has at zero fall short of its target (a
    checkpoint from before the run's zero point ``zero_at``, e.g. an early best.pt or epochN.pt, or floors in the
    way)."""
    if reached >= target.ratio - 1e-6:
        return
    what = f"'{source}'" if source else "the model"
    if progress < zero_at:
        log("warning", f"ultra-prune: {what} is from {progress:.0%} of a sparsity_target={target.ratio:g} run, "
                       f"before its chosen channels reach zero (at {zero_at:.0%} of training): its zero channels are "
                       f"{reached:.1%} of the {target.by}, and only those are pruned. Prune the finished run's last.pt "
                       "(or best.pt), or give prune= to prune by importance")
    else:
        log("warning", f"ultra-prune: the zero channels of {what} are {reached:.1%} of the {target.by}, short of "
                       f"its sparsity_target={target.ratio:g} (the floors allow no more); only those are pruned. Give "
                       "prune= to prune further by importance")

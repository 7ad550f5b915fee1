"""Pruning to a latency budget checked on the runtime (``prune_by=latency``).

The per-layer latency table predicts what a pruning saves; the runtime has the last word. The pruned model is
exported and timed beside the unpruned one, and pruned again where the runtime disagrees with the table (it fuses,
reorders or skips what the table cannot see). The aim that was kept is cached with the table's timings, so the same
pruning again measures nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ultra_prune.args import PruneConfig
from ultra_prune.pruning.importance import Importance

CORRECTIONS = 2  # how many times a pruning that measures off its budget is made again
BAND = (0.95, 1.02)  # a pruning measured within these shares of its budget is taken as it is


@dataclass
class Try:
    """One pruning of the model and how it measured: ``ratio`` is its measured latency over the unpruned
    model's, ``aim`` the share of the predicted latency it was asked to remove, ``ms`` the measured (before, after)."""

    ratio: float
    aim: float
    pruned: nn.Module
    info: dict
    ms: tuple[float, float]

    def predicted(self) -> float:
        """The table's predicted latency after over before."""
        before, after = self.info["latency_ms"]
        return after / before

    def short_of(self, share: float) -> bool:
        """Whether the table predicts it keeps more than ``1 - share`` of the latency: the floors stopped it."""
        return short_of(*self.info["latency_ms"], share)


def short_of(before: float, after: float, share: float) -> bool:
    """Whether a predicted latency ``after`` keeps more than ``1 - share`` of ``before`` (beyond rounding)."""
    return after > (1 - share) * before * 1.001


def prune_to_measured(model, cfg: PruneConfig, importance: Importance, table, verbose: bool = True):
    """``prune_model`` under ``prune_by=latency``, checked on the runtime: ``(pruned, info, (ms before, ms
    after))``. When the exported model measures outside ``BAND`` of the budget, it is pruned again from ``model`` to
    a prediction moved by that error, up to ``CORRECTIONS`` times, or until the floors stop it; of the tries, the
    least pruned one within ``BAND[1]`` of the budget is kept (else the fastest). The kept aim is cached, keyed by
    the first try's architecture, so the same pruning again goes straight to it and takes it as it measures (under
    DDP the other ranks get rank 0's cache, and so its choice). Nothing prunable: ``(copy, info, None)``."""
    from ultra_prune.pruning import prune_model

    def attempt(aim: float) -> Try | tuple[nn.Module, dict]:  # (the unchanged copy, info) when nothing is prunable
        pruned, info = prune_model(model, aim, cfg.round_to, cfg.floor, "latency", cfg.imgsz, importance=importance,
                                   latency=table.model, depth=cfg.depth)
        if not info["pruned"]:
            return pruned, info
        before, after = table.whole([model, pruned], cfg.imgsz)
        return Try(after / before, aim, pruned, info, (before, after))

    first = attempt(cfg.ratio)
    if not isinstance(first, Try):
        return (*first, None)
    goal = 1 - cfg.ratio
    memo = (f"aim {table.arch_key(model, cfg.imgsz)} {table.arch_key(first.pruned, cfg.imgsz)} {cfg.ratio} "
            f"{cfg.floor} {cfg.depth}")
    known = table.cache.get(table.key, memo)
    if known is not None:  # taken as it measures, no correction: every DDP rank agrees
        again = first if abs(known - first.aim) < 1e-9 else attempt(known)
        kept = again if isinstance(again, Try) else first
    else:
        kept = _corrected(first, goal, attempt, cfg.runtime, verbose)
        table.cache.put(table.key, memo, kept.aim)
        table.cache.save()
    if kept.ratio > goal * 1.05 and not kept.short_of(cfg.ratio):  # (the floors have their own warning)
        from ultra_prune.logs import log

        log("warning", f"ultra-prune: the pruned model measured {kept.ratio / goal:.2f}x its latency budget on "
                       f"{cfg.runtime} (predicted {kept.predicted():.3f} of the latency, measured {kept.ratio:.3f}), "
                       f"re-pruned up to {CORRECTIONS} times; ask for a larger prune= to get under it")
    return kept.pruned, kept.info, kept.ms


def _corrected(first: Try, goal: float, attempt, runtime: str, verbose: bool) -> Try:
    """The try to keep after pruning again, from ``first``, while it measures outside ``BAND`` of ``goal``."""
    from ultralytics.utils import LOGGER, colorstr

    tries = [first]
    while len(tries) <= CORRECTIONS:
        last = tries[-1]
        if BAND[0] * goal <= last.ratio <= BAND[1] * goal or (last.ratio > goal and last.short_of(last.aim)):
            break
        aim = min(max(1 - (1 - last.aim) * goal / last.ratio, 1e-3), 0.999)
        if any(abs(aim - t.aim) < 1e-6 for t in tries):
            break
        if verbose:
            LOGGER.info(f"{colorstr('ultra-prune:')} the pruned model measured {last.ratio:.3f} of the latency on "
                        f"{runtime} for a predicted {last.predicted():.3f}; pruning again to a predicted {1 - aim:.3f}")
        again = attempt(aim)
        if not isinstance(again, Try):
            break
        tries.append(again)
    within = [t for t in tries if t.ratio <= BAND[1] * goal]
    return max(within, key=lambda t: t.ratio) if within else min(tries, key=lambda t: t.ratio)


def warn_latency_floor(cfg: PruneConfig, before: float, after: float) -> None:
    """One warning when a latency budget cannot be reached: every layer at its floor leaves more than it allows."""
    from ultra_prune.logs import log

    if not short_of(before, after, cfg.ratio):
        return
    blocks = "and every residual block removed " if cfg.depth else ""
    log("warning", f"ultra-prune: prune={cfg.ratio:g} prune_by=latency cannot be reached on {cfg.runtime}: with every "
                   f"layer at its floor (prune_min={cfg.floor}, prune_round={cfg.round_to}) {blocks}the model keeps "
                   f"{after / before:.1%} of its predicted latency. Lower prune_min= or prune_round= (widths off the "
                   "runtime's preferred multiple may run slower than predicted), or ask for less")

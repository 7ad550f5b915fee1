"""Pruning to a latency budget checked on the runtime (``prune_by=latency``).

The per-layer latency table predicts what a pruning saves; the runtime has the last word. The pruned model is
exported and timed beside the unpruned one, and pruned again where the runtime disagrees with the table (it fuses,
reorders or skips what the table cannot see). The ratio that was kept is cached with the table's timings, so the same
pruning again measures nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ultra_prune.config.settings import PruneConfig
from ultra_prune.pruning.importance import Importance

CORRECTIONS = 3  # how many times a pruning that measures off its budget is made again
BAND = (0.95, 1.02)  # a pruning measured within these shares of its budget is taken as it is


@dataclass
class Try:
    """One pruning of the model and how it measured: ``kept`` is its measured latency over the unpruned model's,
    ``ratio`` the share of the predicted latency it was asked to remove, ``ms`` the measured (before, after)."""

    kept: float
    ratio: float
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
    """``prune_model`` under ``prune_by=latency``, checked on the runtime: ``(pruned, info, (ms before, ms after))``.
    When the exported model measures outside ``BAND`` of the budget, it is pruned again from ``model`` to a
    prediction moved by that error (``_next_ratio``), up to ``CORRECTIONS`` times, or until the floors stop it;
    of the tries, the least pruned one within ``BAND[1]`` of the budget is kept (else the fastest). The chosen
    ratio is cached, keyed by the first try's architecture, so the same pruning again goes straight to it and
    takes it as it measures (under DDP the other ranks get rank 0's cache, and so its choice). Nothing prunable:
    ``(copy, info, None)``."""
    from ultra_prune.pruning import prune_model

    def attempt(ratio: float) -> Try | tuple[nn.Module, dict]:  # (the unchanged copy, info): nothing is prunable
        pruned, info = prune_model(model, ratio, cfg.round_to, cfg.floor, "latency", cfg.imgsz, importance=importance,
                                   latency=table.model, depth=cfg.depth)
        if not info["pruned"]:
            return pruned, info
        before, after = table.whole([model, pruned], cfg.imgsz)
        return Try(after / before, ratio, pruned, info, (before, after))

    first = attempt(cfg.ratio)
    if not isinstance(first, Try):
        return (*first, None)
    warn_latency_floor(cfg, *first.info["latency_ms"], on=table.key)  # (a correction may rightly ask for less)
    budget = 1 - cfg.ratio  # the share of the measured latency that may stay
    # the cache key keeps its first word ("aim") from earlier releases, so their cached choices are found
    memo = (f"aim {table.arch_key(model, cfg.imgsz)} {table.arch_key(first.pruned, cfg.imgsz)} {cfg.ratio} "
            f"{cfg.floor} {cfg.depth}")
    known = table.cache.get(table.key, memo)
    if known is not None:  # taken as it measures, no correction: every DDP rank agrees
        again = first if abs(known - first.ratio) < 1e-9 else attempt(known)
        chosen = again if isinstance(again, Try) else first
    else:
        chosen = _corrected(first, budget, attempt, table.key, verbose)
        table.cache.put(table.key, memo, chosen.ratio)
        table.cache.save()
    if chosen.kept > budget * 1.05 and not chosen.short_of(cfg.ratio):  # (the floors have their own warning)
        from ultra_prune.io.logs import log

        fix = ("every layer is at its floor there: lower prune_min= (or prune_round=) to get under it"
               if chosen.short_of(chosen.ratio) else "ask for a larger prune= to get under it")
        log("warning", f"ultra-prune: the pruned model measured {chosen.kept / budget:.2f}x its latency budget on "
                       f"{table.key} (predicted {chosen.predicted():.3f} of the latency, measured {chosen.kept:.3f}), "
                       f"re-pruned up to {CORRECTIONS} times; {fix}")
    return chosen.pruned, chosen.info, chosen.ms


def _corrected(first: Try, budget: float, attempt, runtime: str, verbose: bool) -> Try:
    """The try to keep after pruning again, from ``first``, while it measures outside ``BAND`` of ``budget`` (the
    share of the latency that may stay)."""
    from ultralytics.utils import LOGGER, colorstr

    tries = [first]
    while len(tries) <= CORRECTIONS:
        last = tries[-1]
        if BAND[0] * budget <= last.kept <= BAND[1] * budget or (last.kept > budget and last.short_of(last.ratio)):
            break
        ratio = _next_ratio(tries, budget)
        if any(abs(ratio - t.ratio) < 1e-6 for t in tries):
            break
        if verbose:
            LOGGER.info(f"{colorstr('ultra-prune:')} the pruned model measured {last.kept:.3f} of the latency on "
                        f"{runtime} for a predicted {last.predicted():.3f}; pruning again to a predicted {1 - ratio:.3f}")
        again = attempt(ratio)
        if not isinstance(again, Try):
            break
        tries.append(again)
    within = [t for t in tries if t.kept <= BAND[1] * budget]
    return max(within, key=lambda t: t.kept) if within else min(tries, key=lambda t: t.kept)


def _next_ratio(tries: list[Try], budget: float) -> float:
    """The share to ask for next: the last try's, moved by its measured error (as if the table erred by a constant
    factor); once tries measured on both sides of ``budget``, interpolated between the nearest two (the table's error
    may grow as the model shrinks: per-conv overheads a multi-threaded runtime hides in a whole model)."""
    under = [t for t in tries if t.kept < budget]
    over = [t for t in tries if t.kept > budget]
    if under and over:
        lo, hi = max(under, key=lambda t: t.kept), min(over, key=lambda t: t.kept)
        ratio = hi.ratio + (budget - hi.kept) * (lo.ratio - hi.ratio) / (lo.kept - hi.kept)
    else:
        last = tries[-1]
        ratio = 1 - (1 - last.ratio) * budget / last.kept
    return min(max(ratio, 1e-3), 0.999)


def warn_latency_floor(cfg: PruneConfig, before: float, after: float, on: str = "") -> None:
    """One warning when a latency budget cannot be reached on ``on`` (a runtime's identity; default the configured
    runtime): every layer at its floor leaves more than it allows."""
    from ultra_prune.io.logs import log

    if not short_of(before, after, cfg.ratio):
        return
    blocks = "and every residual block removed " if cfg.depth else ""
    log("warning", f"ultra-prune: prune={cfg.ratio:g} prune_by=latency cannot be reached on {on or cfg.runtime}: "
                   f"with every layer at its floor (prune_min={cfg.floor}, prune_round={cfg.round_to}) {blocks}the "
                   f"model keeps {after / before:.1%} of its predicted latency. Lower prune_min= or prune_round= "
                   "(widths off the runtime's preferred multiple may run slower than predicted), or ask for less")

"""A model's latency on a runtime as a function of its channel widths, measured on this machine and cached.

``LatencyTable`` (HALP's per-layer lookup table, Shen et al. 2021): every conv is timed alone on the runtime at
every kept count the pruner may give it, along each axis (its output channels at full input width, and its input
channels at full output width); a conv at ``cin`` -> ``cout`` is predicted as ``t(cin, full) * t(full, cout) / t(full,
full)``. What the whole model adds beyond its convs (and what the single-layer timings get wrong) is fitted on
whole-model timings: ``latency = alpha * sum(conv times) + beta``, from the model and two latency-pruned copies of it.

Every timing is cached in ultralytics' settings folder (``latency.json`` in ``<settings dir>/ultra_prune``), keyed by
runtime and version, device, batch, the layer's shape and widths (and, for the whole-model fit, the architecture and
image size), so a second run measures nothing. ``preferred_round`` measures at which channel multiples the model runs
fastest on the runtime (the ``prune_round=auto`` of ``prune_by=latency``).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from bisect import bisect_left
from pathlib import Path

from torch import nn

from ultra_prune.pruning.cost import ConvShape, LatencyModel, convs

CACHE_NAME = "latency.json"
ROUNDS = (8, 16, 32)  # the prune_round candidates preferred_round chooses from
PROBE_CUT = 0.3  # the share of latency preferred_round prunes at each rounding (where floors bind no rounding)


def cache_path() -> Path:
    """``<ultralytics settings dir>/ultra_prune/latency.json`` (``YOLO_CONFIG_DIR`` moves it)."""
    from ultralytics.utils import USER_CONFIG_DIR

    return Path(USER_CONFIG_DIR) / "ultra_prune" / CACHE_NAME


# What this process measured (or was given by DDP rank 0), per cache file: a later Cache of the same file finds it
# even where the file could not be written.
MEASURED: dict[str, dict] = {}


def _merge(into: dict, entries: dict) -> None:
    for runtime, values in entries.items():
        into.setdefault(runtime, {}).update(values)


def share_measurements() -> None:
    """Under DDP (a collective call: every rank makes it once): every rank gets the timings rank 0 has (its cache
    file and what it measured in this process), filed under its own cache path, so the ranks time nothing and agree
    even where the settings folder is not writable or not shared."""
    import torch.distributed as dist

    box = [Cache().data if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, 0)
    _merge(MEASURED.setdefault(str(cache_path()), {}), box[0])


class Cache:
    """The measured timings on disk: ``{runtime key: {entry key: value}}``, rewritten atomically on ``save``."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else cache_path()
        try:
            self.data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        _merge(self.data, MEASURED.get(str(self.path), {}))
        self.dirty = False

    def get(self, runtime: str, key: str):
        return self.data.get(runtime, {}).get(key)

    def put(self, runtime: str, key: str, value) -> None:
        self.data.setdefault(runtime, {})[key] = value
        MEASURED.setdefault(str(self.path), {}).setdefault(runtime, {})[key] = value
        self.dirty = True

    def save(self) -> None:
        """Merge into what is on disk now (another process may have measured too) and write atomically; a
        read-only settings folder only costs the next run its measurements."""
        from ultra_prune.io.checkpoint import atomic_write

        if not self.dirty:
            return
        try:
            disk = json.loads(self.path.read_text())
        except (OSError, ValueError):
            disk = {}
        _merge(disk, self.data)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(disk)))
        except OSError:
            return
        self.data, self.dirty = disk, False


def counts(n: int, round_to: int) -> list[int]:
    """The widths a conv axis of ``n`` channels is timed at: ``n`` and every multiple of ``round_to`` below it."""
    return sorted({n, *range(round_to, n, round_to)})


def _shape_key(shape: ConvShape, cin: int, cout: int) -> str:
    return json.dumps([*shape, cin, cout])


def offline(runtime) -> bool:
    """Whether ``runtime`` is an offline table (``latency.offline``): it has the timings its kit listed, and cannot
    time a pruned model."""
    return hasattr(runtime, "lookup")


def _chunks(items: list, size: int):
    for at in range(0, len(items), size):
        yield items[at : at + size]


SAVE_EVERY_S = 10.0  # while timing, the cache is written at most this often


class LatencyTable:
    """Per-conv times on ``runtime`` (a ``runtimes`` runtime) at multiples of ``round_to``, and the whole-model fit
    of each model it has measured. ``model(model, imgsz)`` is the ``cost.LatencyModel`` the pruner's budget uses."""

    def __init__(self, runtime, round_to: int = 8, batch: int = 1, cache: Cache | None = None, verbose: bool = True):
        self.runtime, self.round_to, self.batch, self.verbose = runtime, round_to, batch, verbose
        self.cache = cache or Cache()
        self.key = runtime.key()
        self.axes: dict[tuple, tuple[list, list, list, list]] = {}  # (shape, full cin, full cout) -> widths, times
        self.measured = 0  # timings taken (not from the cache) by this table

    def _time(self, points: list[tuple[ConvShape, int, int]], what: str) -> None:
        """Time every ``(shape, cin, cout)`` of ``points`` the cache lacks, with a progress bar."""
        missing = [p for p in dict.fromkeys(points) if self.cache.get(self.key, _shape_key(*p)) is None]
        if not missing:
            return
        from ultralytics.utils import TQDM, colorstr

        bar = TQDM(total=len(missing), desc=f"{colorstr('ultra-prune:')} {what} on {self.runtime.name}",
                   disable=not self.verbose)
        saved = time.monotonic()
        try:  # what was timed is kept when the rest fails (an agent stopped): the next run goes on from there
            for points, ms in self._timings(missing):
                for p, t in zip(points, ms):
                    self.cache.put(self.key, _shape_key(*p), t)
                self.measured += len(points)
                bar.update(len(points))
                if time.monotonic() - saved >= SAVE_EVERY_S:  # (a process killed outright loses less)
                    self.cache.save()
                    saved = time.monotonic()
        finally:
            bar.close()
            self.cache.save()

    def _timings(self, points: list):
        """``(points, their ms)`` in pieces, from whichever kind of runtime it is: one that times ONNX elsewhere
        (an agent), an offline table, or one that runs here."""
        from ultra_prune.latency.runtimes import conv_onnx, median_ms

        if hasattr(self.runtime, "time_onnx"):
            for chunk in _chunks(points, self.runtime.chunk):
                files = [(conv_onnx(s, ci, co), (s.batch, ci, s.height, s.width)) for s, ci, co in chunk]
                yield chunk, self.runtime.time_onnx(files, interleaved=False)
        elif offline(self.runtime):
            yield points, [self.runtime.lookup(_shape_key(s, ci, co), f"the conv {list(s)} at {ci} -> {co} channels")
                           for s, ci, co in points]
        else:
            for p in points:
                yield [p], [median_ms(self.runtime.layer(*p))]

    def time_models(self, models: list, imgsz: int, rounds: int = 50) -> list[float]:
        """Each model's median ms on the runtime, timed interleaved (not cached; see ``whole``)."""
        from ultra_prune.latency.runtimes import export_onnx, interleaved_ms

        if offline(self.runtime):
            return [self.runtime.lookup(f"model {self.arch_key(m, imgsz)}", "this model") for m in models]
        if not hasattr(self.runtime, "time_onnx"):
            return interleaved_ms(self.runtime.models(models, imgsz, self.batch), rounds)
        from ultra_prune.pruning.probe import input_channels

        with tempfile.TemporaryDirectory(prefix="ultra_prune_remote_") as folder:
            files = [(export_onnx(m, imgsz, self.batch, folder).read_bytes(),
                      (self.batch, input_channels(m), imgsz, imgsz)) for m in models]
        return self.runtime.time_onnx(files, interleaved=True, rounds=rounds)

    def points(self, model: nn.Module, imgsz: int) -> list[tuple[ConvShape, int, int]]:
        """Every ``(shape, cin, cout)`` the table times for ``model`` at ``imgsz``: each conv along both axes."""
        points = []
        for c, shape in convs(model, imgsz, self.batch).items():
            ci, co = c.in_channels, c.out_channels
            if shape.groups == 0:
                points += [(shape, w, w) for w in counts(co, self.round_to)]
            else:
                points += [(shape, ci, w) for w in counts(co, self.round_to)]
                points += [(shape, w, co) for w in counts(ci, self.round_to)]
        return list(dict.fromkeys(points))

    def measure(self, model: nn.Module, imgsz: int) -> dict[nn.Conv2d, ConvShape]:
        """Time (or find in the cache) every conv of ``model`` at ``imgsz`` along both axes; return the convs."""
        shapes = convs(model, imgsz, self.batch)
        self._time(self.points(model, imgsz), f"timing {len(shapes)} layers")
        for c, shape in shapes.items():
            self._axes(shape, c.in_channels, c.out_channels)
        return shapes

    def _axes(self, shape: ConvShape, ci: int, co: int):
        key = (shape, ci, co)
        if key not in self.axes:
            get = lambda a, b: self.cache.get(self.key, _shape_key(shape, a, b))  # noqa: E731
            if shape.groups == 0:
                ws = counts(co, self.round_to)
                self.axes[key] = (ws, [get(w, w) for w in ws], ws, [get(w, w) for w in ws])
            else:
                wo, wi = counts(co, self.round_to), counts(ci, self.round_to)
                self.axes[key] = (wi, [get(w, co) for w in wi], wo, [get(ci, w) for w in wo])
        return self.axes[key]

    def ms(self, shape: ConvShape, cin: int, cout: int, full: tuple[int, int]) -> float:
        """The predicted time of a conv measured at ``full`` = (cin, cout) widths, now at ``cin`` -> ``cout``."""
        wi, ti, wo, to = self._axes(shape, *full)
        if shape.groups == 0:
            return _interp(wo, to, cout)
        return _interp(wi, ti, cin) * _interp(wo, to, cout) / max(to[-1], 1e-9)

    def arch_key(self, model: nn.Module, imgsz: int) -> str:
        """What a whole-model timing of ``model`` at ``imgsz`` depends on: its conv shapes and widths, layer types."""
        shapes = convs(model, imgsz, self.batch)
        layers = [type(m).__name__ for m in getattr(model, "model", [])]
        text = json.dumps([[*s, c.in_channels, c.out_channels] for c, s in shapes.items()] + [layers, imgsz])
        return hashlib.sha1(text.encode()).hexdigest()

    def model(self, model: nn.Module, imgsz: int) -> LatencyModel:
        """The latency model of ``model`` at ``imgsz``: measured (or cached) layers and whole-model fit."""
        self.measure(model, imgsz)
        alpha, beta = self.fit(model, imgsz)
        return self._latency_model(model, imgsz, alpha, beta)

    def _latency_model(self, model, imgsz, alpha=1.0, beta=0.0) -> LatencyModel:
        return LatencyModel(model, imgsz, self, self.batch, alpha, beta)

    def fit(self, model: nn.Module, imgsz: int) -> tuple[float, float]:
        """``(alpha, beta)`` of ``model``: its measured latency and that of two copies pruned by 35 % and 65 % of
        the summed layer times (BN |gamma| ranked), against those sums, by least squares."""
        key = f"fit {self.arch_key(model, imgsz)} round {self.round_to}"
        cached = self.cache.get(self.key, key)
        if cached is not None:
            return tuple(cached)
        from ultralytics.utils import LOGGER, colorstr

        from ultra_prune.pruning import prune_model

        if self.verbose:
            LOGGER.info(f"{colorstr('ultra-prune:')} timing the whole model and two pruned copies on "
                        f"{self.runtime.name} (exported, {imgsz} px, batch {self.batch})")
        copies, sums = [model], [self._latency_model(model, imgsz).latency()]
        if offline(self.runtime):  # the whole model only
            alpha = self.whole([model], imgsz)[0] / max(sums[0], 1e-9)
            self.cache.put(self.key, key, [alpha, 0.0])
            return alpha, 0.0
        for ratio in (0.35, 0.65):
            pruned, info = prune_model(model, ratio, self.round_to, self.round_to, "latency", imgsz,
                                       latency=lambda m, s: self._latency_model(m, s))
            copies.append(pruned)
            sums.append(info["latency_ms"][1])
        measured = self.whole(copies, imgsz)
        alpha, beta = _line(sums, measured)
        if not 0.2 < alpha < 5:  # a timing too noisy to fit a slope: scale the layer sum to the full model
            alpha, beta = measured[0] / max(sums[0], 1e-9), 0.0
        self.cache.put(self.key, key, [alpha, beta])
        self.cache.save()
        return alpha, beta

    def whole(self, models: list, imgsz: int, rounds: int = 50) -> list[float]:
        """The measured latency in ms of each of ``models`` on the runtime: exported and timed interleaved, the
        median of ``rounds`` rounds after warm-up (cached for this very list of architectures)."""
        key = "whole " + hashlib.sha1(" ".join(self.arch_key(m, imgsz) for m in models).encode()).hexdigest()
        cached = self.cache.get(self.key, key)
        if cached is not None:
            return list(cached)
        measured = self.time_models(models, imgsz, rounds)
        self.cache.put(self.key, key, measured)
        self.cache.save()
        self.measured += len(models)
        return measured


def _interp(xs: list[int], ys: list[float], x: float) -> float:
    """``ys`` at ``x``, linear between the measured ``xs`` (proportional below the smallest)."""
    i = bisect_left(xs, x)
    if i < len(xs) and xs[i] == x:
        return ys[i]
    if i == 0:
        return ys[0] * x / xs[0]
    if i == len(xs):
        return ys[-1]
    w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] * (1 - w) + ys[i] * w


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``(slope, intercept)`` of ``ys`` against ``xs``."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 1.0, my - mx
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return slope, my - slope * mx


def table_for(cfg, device=None, verbose: bool = True) -> LatencyTable:
    """The latency table a resolved ``config.settings.PruneConfig`` names: its runtime, rounding and batch (``device``: the
    training device, for ``latency_runtime=torch``)."""
    return LatencyTable(runtime_of(cfg, device), cfg.round_to, cfg.batch, verbose=verbose)


def runtime_of(cfg, device=None):
    """The runtime a ``config.settings.PruneConfig`` names: the agent at ``cfg.agent`` (``latency_device=``), the
    offline table ``cfg.table`` (``latency_table=``), else ``cfg.runtime`` here at ``cfg.precision`` (``device``:
    the training device, for ``torch``)."""
    if cfg.agent:
        from ultra_prune.latency.remote import Remote

        return Remote(cfg.agent, Cache())
    if cfg.table:
        from ultra_prune.latency.offline import TableFile

        return TableFile(cfg.table)
    from ultra_prune.latency.runtimes import runtime_for

    return runtime_for(cfg.runtime, device, cfg.precision)


def preferred_round(runtime, model: nn.Module, imgsz: int, batch: int = 1, cache: Cache | None = None,
                    verbose: bool = True, reach: float = 0.0, floor: int = 8) -> int:
    """The smallest of ``ROUNDS`` at which ``model`` runs as fast as at any: ``model`` is pruned by ``PROBE_CUT`` of
    its predicted latency at each rounding (BN |gamma| ranked), and the copies are exported and timed interleaved
    with it; a rounding is taken when its copy is within 5 % of the fastest. A runtime that pads or reorders widths
    off its blocks (OpenVINO on AVX-512 runs in blocks of 32) makes the finer roundings' copies slower than their
    single-layer timings say. ``reach``: when the floors at that rounding (``floor``, rounded up to it) cannot remove
    this share of the latency, the coarsest finer rounding that can (else the finest)."""
    cache = cache or Cache()
    choice = _fastest_round(runtime, model, imgsz, batch, cache, verbose)
    for r in sorted((r for r in ROUNDS if r <= choice), reverse=True):
        if floor_share(model, LatencyTable(runtime, r, batch, cache, verbose), floor, imgsz) <= 1 - reach:
            return r
    return ROUNDS[0]


def floor_share(model: nn.Module, table: LatencyTable, floor: int, imgsz: int) -> float:
    """The share of its predicted latency ``model`` keeps with every layer at its floor (at ``table``'s rounding),
    as ``prune_model`` would prune it, from the selection alone (no copy, no surgery)."""
    from ultra_prune.pruning import analyse, budget_for
    from ultra_prune.pruning.importance import Magnitude
    from ultra_prune.pruning.select import select

    budget = budget_for("latency", 0.999, model, imgsz, table.model)
    select(analyse(model).roots(), budget, Magnitude(), table.round_to, floor)
    return budget.cost.latency() / budget.cost.total


def _fastest_round(runtime, model: nn.Module, imgsz: int, batch: int, cache: Cache, verbose: bool) -> int:
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.pruning import prune_model

    fine = LatencyTable(runtime, ROUNDS[0], batch, cache, verbose)
    key = f"round {fine.arch_key(model, imgsz)}"
    if cache.get(fine.key, key) is not None:
        return int(cache.get(fine.key, key))
    fine.measure(model, imgsz)  # every multiple of 8: the coarser roundings' widths too
    if verbose:
        LOGGER.info(f"{colorstr('ultra-prune:')} timing the model pruned at channel multiples of "
                    f"{'/'.join(map(str, ROUNDS))} on {runtime.name} (prune_round=auto)")
    copies = []
    for r in ROUNDS:
        table = LatencyTable(runtime, r, batch, cache, verbose=False)
        copies.append(prune_model(model, PROBE_CUT, r, 8, "latency", imgsz,
                                  latency=lambda m, s, t=table: t._latency_model(m, s))[0])
    ms = fine.time_models(copies, imgsz)
    choice = next(r for r, t in zip(ROUNDS, ms) if t <= 1.05 * min(ms))
    cache.put(fine.key, key, choice)
    cache.save()
    return choice

"""``prune_by=latency``: the per-layer latency table (measured, cached, fitted to whole models), the selector's
cost-ranked steps, the per-runtime rounding, and the real onnxruntime path end to end (report, cache hit).

Synthetic runtimes give exact, known times, so predictions and fits are checked for equality; the real runtime is
checked for what it writes and measures, never for how fast it runs (that is ``benchmarks/bench_latency.py``).
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch
from helpers import base

from ultra_prune.latency import runtimes
from ultra_prune.latency import table as latency
from ultra_prune.errors import UltraPruneError
from ultra_prune.latency.table import Cache, LatencyTable, preferred_round
from ultra_prune.pruning import prune_model
from ultra_prune.pruning.cost import ConvShape, convs
from ultra_prune.pruning.graph import Space
from ultra_prune.pruning.select import Latency, select

IMGSZ = 64
BETA = 0.5  # what a synthetic whole model adds to its convs, in ms


class Timed:
    """A stand-in for one run of a layer or model: ``ms`` is what timing it gives (``exact_timing``)."""

    def __init__(self, ms: float):
        self.ms = ms

    def __call__(self):
        return None


def separable(shape: ConvShape, cin: int, cout: int) -> float:
    """A synthetic conv time (ms): proportional to its multiply-adds, so exactly the product of its two axes."""
    groups = cin if shape.groups == 0 else shape.groups
    k = shape.kernel[0] * shape.kernel[1]
    return 1e-6 * cout * (cin // groups) * k * shape.height * shape.width / (shape.stride[0] * shape.stride[1])


class Synthetic:
    """A runtime with known times: ``conv_ms`` per layer, and per whole model its convs' times + BETA."""

    name = "synthetic"

    def __init__(self, conv_ms=separable):
        self.conv_ms, self.layers = conv_ms, 0

    def key(self):
        return f"synthetic {self.conv_ms.__name__}"

    def layer(self, shape, cin, cout):
        self.layers += 1
        return Timed(self.conv_ms(shape, cin, cout))

    def models(self, models, imgsz, batch):
        return [Timed(sum(self.conv_ms(s, c.in_channels, c.out_channels) for c, s in convs(m, imgsz, batch).items())
                      + BETA) for m in models]


@pytest.fixture
def exact_timing(monkeypatch):
    """Timing a ``Timed`` gives its ``ms``."""
    monkeypatch.setattr(runtimes, "median_ms", lambda run, **_: run.ms)
    monkeypatch.setattr(runtimes, "interleaved_ms", lambda runs, rounds=50, **_: [r.ms for r in runs])


def test_table_predicts_a_separable_cost_exactly_and_fits_what_the_model_adds(tmp_path, exact_timing):
    model = base("yolov8n.yaml")
    rt = Synthetic()
    table = LatencyTable(rt, 8, cache=Cache(tmp_path / "latency.json"), verbose=False)
    lm = table.model(model, IMGSZ)
    want = sum(separable(s, c.in_channels, c.out_channels) for c, s in convs(model, IMGSZ).items())
    assert lm.total == pytest.approx(want + BETA, rel=1e-9)
    assert table.fit(model, IMGSZ) == pytest.approx((1.0, BETA), rel=1e-6, abs=1e-9)
    # every width the pruner may give a conv was timed, along each axis
    c = next(c for c in convs(model, IMGSZ) if c.in_channels == c.out_channels == 64 and c.groups == 1)
    shape = convs(model, IMGSZ)[c]
    assert table.ms(shape, 24, 40, (64, 64)) == pytest.approx(separable(shape, 24, 40), rel=1e-9)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_prune_by_latency_removes_the_share_of_the_whole_model(tmp_path, exact_timing, ratio):
    model = base("yolov8n.yaml")
    rt = Synthetic()
    table = LatencyTable(rt, 8, cache=Cache(tmp_path / "latency.json"), verbose=False)
    pruned, info = prune_model(model, ratio, 8, 8, "latency", IMGSZ, latency=table.model)
    before, after = (t.ms for t in rt.models([model, pruned], IMGSZ, 1))
    assert info["latency_ms"] == pytest.approx((before, after), rel=1e-6)  # the prediction is the measurement
    assert after <= (1 - ratio) * before + 1e-9  # at least the budget
    assert after > (1 - ratio) * before - 0.15 * before  # and not far beyond it (one step)


def test_a_second_table_on_the_same_cache_measures_nothing(tmp_path, exact_timing):
    model = base("yolov8n.yaml")
    first = LatencyTable(Synthetic(), 8, cache=Cache(tmp_path / "latency.json"), verbose=False)
    a = prune_model(model, 0.5, 8, 8, "latency", IMGSZ, latency=first.model)[1]["latency_ms"]
    assert first.measured > 0 and (tmp_path / "latency.json").is_file()
    rt = Synthetic()
    again = LatencyTable(rt, 8, cache=Cache(tmp_path / "latency.json"), verbose=False)
    b = prune_model(model, 0.5, 8, 8, "latency", IMGSZ, latency=again.model)[1]["latency_ms"]
    assert again.measured == 0 and rt.layers == 0
    assert a == b
    # another rounding needs only the widths it adds (none: multiples of 16 are multiples of 8) and its own fit
    third = LatencyTable(rt, 16, cache=Cache(tmp_path / "latency.json"), verbose=False)
    third.model(model, IMGSZ)
    assert rt.layers == 0 and third.measured == 3  # the model and its two fitting copies


def test_a_cache_that_cannot_be_written_keeps_its_measurements_in_the_process(tmp_path, exact_timing):
    (tmp_path / "taken").write_text("a file where the cache folder would go")
    path = tmp_path / "taken" / "latency.json"
    model = base("yolov8n.yaml")
    first = LatencyTable(Synthetic(), 8, cache=Cache(path), verbose=False)
    first.model(model, IMGSZ)
    assert first.measured > 0 and not path.exists()  # the save failed quietly
    rt = Synthetic()
    LatencyTable(rt, 8, cache=Cache(path), verbose=False).model(model, IMGSZ)
    assert rt.layers == 0  # a later table in this process measures nothing

class Cost:
    """A latency budget's cost for hand-made spaces: ``ms(space, kept)`` per space, summed."""

    def __init__(self, spaces, ms):
        self.ms, self.kept = ms, {id(s): s.size for s in spaces}
        self.total = sum(ms(s, s.size) for s in spaces)

    def remove(self, space, n):
        saved = self.saving(space, n)
        self.kept[id(space)] -= n
        return saved

    def saving(self, space, n):
        k = self.kept[id(space)]
        return self.ms(space, k) - self.ms(space, k - n)


class Scores:
    name = "fixed"

    def __init__(self, scores):
        self.scores = scores

    def __call__(self, space):
        return self.scores[id(space)]


def test_latency_steps_go_by_importance_as_every_budget_does():
    cheap, dear = Space(32, producers=[(None, 0)]), Space(32, producers=[(None, 0)])
    per_channel = {id(cheap): 1.0, id(dear): 10.0}
    cost = Cost([cheap, dear], lambda s, k: per_channel[id(s)] * k)
    scores = {id(cheap): torch.full((32,), 1.0), id(dear): torch.full((32,), 2.0)}  # dear is twice as important
    keep = select([cheap, dear], Latency(0.1, cost), Scores(scores), round_to=8, floor=8)
    # the least important go first, however little time they save: 3 steps of cheap (3 ms) before one of dear
    assert cheap in keep and len(keep[cheap]) == 8 and dear in keep and len(keep[dear]) == 24


def test_widths_a_runtime_runs_no_faster_at_are_skipped():
    blocky, linear = Space(128, producers=[(None, 0)]), Space(128, producers=[(None, 0)])
    # blocky runs in blocks of 32 channels (1 ms each), linear costs the same 4 ms spread over its channels
    cost = Cost([blocky, linear], lambda s, k: math.ceil(k / 32) if s is blocky else k / 32)
    scores = {id(blocky): torch.full((128,), 0.1), id(linear): torch.full((128,), 1.0)}
    keep = select([blocky, linear], Latency(0.25, cost), Scores(scores), round_to=8, floor=8)
    # 128 -> 120 saves nothing, so it is joined with the steps down to 96: blocky, the least important, gives the
    # 2 ms in two blocks, and linear keeps every channel
    assert len(keep[blocky]) == 64 and linear not in keep


class Blocky(Synthetic):
    """A runtime whose whole models run 0.2 ms slower per conv with a width off its blocks of ``block`` channels
    (a reorder its single-layer timings never show)."""

    def __init__(self, block: int):
        super().__init__()
        self.block = block

    def key(self):
        return f"blocky {self.block}"

    def models(self, models, imgsz, batch):
        runs = super().models(models, imgsz, batch)
        for run, m in zip(runs, models):
            off = [c for c in convs(m, imgsz, batch) if c.in_channels % self.block or c.out_channels % self.block]
            run.ms += 0.2 * len(off)
        return runs


@pytest.mark.parametrize("block, expected", [(1, 8), (8, 8), (16, 16), (32, 32)])
def test_preferred_round_is_where_the_whole_model_runs_fastest(tmp_path, exact_timing, block, expected):
    model = base("yolov8n.yaml")
    cache = Cache(tmp_path / "latency.json")
    assert preferred_round(Blocky(block), model, IMGSZ, cache=cache, verbose=False) == expected
    rt = Blocky(block)
    assert preferred_round(rt, model, IMGSZ, cache=Cache(tmp_path / "latency.json"), verbose=False) == expected
    assert rt.layers == 0  # cached


def test_preferred_round_is_finer_where_its_floors_stop_the_budget(tmp_path, exact_timing, monkeypatch):
    from ultra_prune.latency.table import floor_share

    monkeypatch.setattr(latency, "_fastest_round", lambda *a: 32)  # the runtime runs multiples of 32 fastest
    model, cache = base("yolov8n.yaml"), Cache(tmp_path / "latency.json")
    share = {r: floor_share(model, LatencyTable(Synthetic(), r, cache=cache, verbose=False), 8, IMGSZ)
             for r in (8, 16, 32)}
    assert share[8] < share[16] < share[32]  # coarser multiples keep more at the floors
    for reach, want in ((1 - share[32] - 1e-9, 32), (1 - share[16] - 1e-9, 16), (1 - share[8] - 1e-9, 8), (0.999, 8)):
        assert preferred_round(Synthetic(), model, IMGSZ, cache=cache, verbose=False, reach=reach) == want


def test_an_unreachable_latency_budget_warns_once(tmp_path, exact_timing, monkeypatch, log):
    from ultra_prune.commands import prune as api
    from ultra_prune.io.checkpoint import save_model

    monkeypatch.setattr(latency, "cache_path", lambda: tmp_path / "latency.json")
    monkeypatch.setattr(runtimes, "runtime_for", lambda name, device=None, *_, **__: Synthetic())
    src = save_model(base("yolov8n.yaml"), tmp_path / "base.pt")
    api.prune(src, prune=0.5, prune_by="latency", prune_round=8, imgsz=IMGSZ, verbose=False)
    assert not [m for m in log if "cannot be reached" in m]
    api.prune(src, prune=0.99, prune_by="latency", prune_round=8, imgsz=IMGSZ, verbose=False,
              prune_out=tmp_path / "b.pt")
    (line,) = [m for m in log if "cannot be reached" in m]
    assert "prune=0.99 prune_by=latency" in line and "prune_min=8, prune_round=8" in line


@pytest.mark.parametrize("shape", [
    ConvShape((3, 3), (2, 2), (1, 1), (1, 1), 1, 16, 16, 1, True),
    ConvShape((1, 1), (1, 1), (0, 0), (1, 1), 1, 8, 8, 2, False),
    ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 0, 16, 16, 1, True),  # depthwise
])
def test_one_conv_graph_is_the_conv_torch_runs(shape):
    import onnxruntime as ort

    cin, cout = (24, 24) if shape.groups == 0 else (24, 40)
    sess = ort.InferenceSession(runtimes.conv_onnx(shape, cin, cout), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((shape.batch, cin, shape.height, shape.width), dtype=np.float32)
    got = sess.run(None, {"x": x})[0]
    groups = cin if shape.groups == 0 else shape.groups
    conv = torch.nn.Conv2d(cin, cout, shape.kernel, shape.stride, shape.padding, shape.dilation, groups)
    assert got.shape == tuple(conv(torch.from_numpy(x)).shape)
    assert (got.min() >= -0.2785) == shape.act  # SiLU's minimum is -0.2785: the activation is there, or not


def test_openvino_missing_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(UltraPruneError, match=r"pip install .ultra-prune\[openvino\]"):
        runtimes.runtime_for("openvino")


def test_litert_missing_is_one_clear_error_that_points_to_an_agent(monkeypatch):
    """Without onnx2tf here (it pins its own numpy, onnx and protobuf), the error names its package and the agent in
    an environment of its own."""
    monkeypatch.setitem(sys.modules, "onnx2tf", None)
    with pytest.raises(UltraPruneError, match=r"pip install onnx2tf.*runtime=litert.*latency_device="):
        runtimes.runtime_for("litert")


def test_openvino_runs_one_conv():
    pytest.importorskip("openvino")
    shape = ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 16, 1, True)
    run = runtimes.runtime_for("openvino").layer(shape, 16, 32)
    out = run()
    assert next(iter(out.values())).shape == (1, 32, 16, 16)


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    """One cache file for the tests that measure on the real onnxruntime (they then share its timings)."""
    return tmp_path_factory.mktemp("latency") / "latency.json"


@pytest.mark.long  # (every conv of yolov8n timed on onnxruntime: about 40 s)
def test_yolo_prune_by_latency_on_onnxruntime_reports_and_then_hits_the_cache(tmp_path, real_cache, monkeypatch,
                                                                               mocker, one_thread):
    from ultra_prune.commands.prune import prune
    from ultra_prune.io.checkpoint import save_model

    monkeypatch.setattr(latency, "cache_path", lambda: real_cache)
    src = save_model(base("yolov8n.yaml"), tmp_path / "base.pt")
    _, report = prune(src, prune=0.5, prune_by="latency", imgsz=IMGSZ, verbose=False)
    assert report.prune_by == "latency" and report.prune_round in (8, 16, 32)
    (pb, pa), (mb, ma) = report.latency_predicted, report.latency_measured
    assert 0 < pa < pb and ma > 0 and mb > 0
    saved = json.loads((tmp_path / "base_pruned_report.json").read_text())
    assert saved["latency_measured"] == list(report.latency_measured) and "prediction error" in report.text()
    timings = [mocker.spy(runtimes, "median_ms"), mocker.spy(runtimes, "interleaved_ms")]
    _, again = prune(src, prune=0.5, prune_by="latency", imgsz=IMGSZ, verbose=False, prune_out=tmp_path / "b.pt")
    assert [t.call_count for t in timings] == [0, 0]  # measures nothing
    assert again.latency_predicted == report.latency_predicted and again.layers == report.layers


def test_bad_latency_arguments():
    from ultra_prune.config.keys import validate

    with pytest.raises(UltraPruneError, match=r"'latency_runtime=tflite' is not one of .*latency_runtime=onnxruntime"):
        validate({"prune_by": "latency", "latency_runtime": "tflite"})
    with pytest.raises(UltraPruneError, match=r"'latency_batch=0' is out of range"):
        validate({"latency_batch": 0})
    validate({"prune_round": "auto", "prune_by": "latency"})


class Hidden(Synthetic):
    """A runtime whose whole models run 2 ms slower when their convs take 40-60 % of ``full`` ms: a cost the per-layer
    table and its fit (on copies at 65 % and 35 %) cannot see."""

    def __init__(self, full: float):
        super().__init__()
        self.full = full

    def key(self):
        return "hidden"

    def models(self, models, imgsz, batch):
        runs = super().models(models, imgsz, batch)
        for run in runs:
            run.ms += 2.0 if 0.4 < (run.ms - BETA) / self.full < 0.6 else 0.0
        return runs


def test_a_pruning_that_measures_over_budget_is_made_again(tmp_path, exact_timing, monkeypatch, log):
    from ultra_prune.commands import prune as api
    from ultra_prune.io.checkpoint import save_model

    monkeypatch.setattr(latency, "cache_path", lambda: tmp_path / "latency.json")
    model = base("yolov8n.yaml")
    full = sum(separable(s, c.in_channels, c.out_channels) for c, s in convs(model, IMGSZ).items())
    monkeypatch.setattr(runtimes, "runtime_for", lambda name, device=None, *_, **__: Hidden(full))
    table = LatencyTable(Hidden(full), 8, cache=Cache(tmp_path / "open.json"), verbose=False)
    open_loop, _ = prune_model(model, 0.5, 8, 8, "latency", IMGSZ, latency=table.model)
    before, after = (r.ms for r in Hidden(full).models([model, open_loop], IMGSZ, 1))
    assert after / before > 0.5 * 1.02  # the table alone misses the budget
    src = save_model(model, tmp_path / "base.pt")
    pruned, report = api.prune(src, prune=0.5, prune_by="latency", prune_round=8, imgsz=IMGSZ, verbose=True)
    before, after = report.latency_measured
    assert after / before <= 0.5 * 1.02
    assert (before, after) == tuple(r.ms for r in Hidden(full).models([model, pruned], IMGSZ, 1))
    assert any("pruning again" in m for m in log)


class Faster(Synthetic):
    """A runtime that runs every pruned model 15 % faster than its convs' times say (fusions the per-layer table
    cannot see); its key is the plain synthetic runtime's, so a fit made there is found in the cache."""

    def __init__(self, full: float):
        super().__init__()
        self.full = full

    def models(self, models, imgsz, batch):
        runs = super().models(models, imgsz, batch)
        for run in runs:
            run.ms = run.ms if run.ms - BETA >= self.full * 0.999 else BETA + (run.ms - BETA) * 0.85
        return runs


def test_a_pruning_that_measures_well_under_budget_is_made_again_with_less_and_remembered(tmp_path, exact_timing,
                                                                                           monkeypatch, log):
    """Measured 15 % under its budget, a pruning is made again less deep and kept once within the band; the same
    pruning again goes straight to the kept aim (two prunings, not three) and keeps the same model."""
    from ultra_prune import pruning
    from ultra_prune.latency import measured
    from ultra_prune.config.settings import PruneConfig
    from ultra_prune.pruning import importance

    model = base("yolov8n.yaml")
    full = sum(separable(s, c.in_channels, c.out_channels) for c, s in convs(model, IMGSZ).items())
    cache = Cache(tmp_path / "latency.json")
    LatencyTable(Synthetic(), 8, cache=cache, verbose=False).model(model, IMGSZ)  # layers and an exact fit
    table = LatencyTable(Faster(full), 8, cache=cache, verbose=False)
    cfg = PruneConfig(0.5, "latency", round_to=8, imgsz=IMGSZ, runtime="faster")
    calls, real = [], pruning.prune_model  # the aims it prunes to
    monkeypatch.setattr(pruning, "prune_model", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    pruned, info, (before, after) = measured.prune_to_measured(model, cfg, importance.Magnitude(), table)
    assert calls[0] == 0.5 and len(calls) >= 2 and calls[-1] < 0.5  # made again, less deep
    assert measured.BAND[0] * 0.5 <= after / before <= measured.BAND[1] * 0.5
    assert any("measured 0.4" in m and "pruning again" in m for m in log)
    first = real(model, 0.5, 8, 8, "latency", IMGSZ, latency=table.model)[0]
    ms = table.whole([model, first], IMGSZ)
    assert ms[1] / ms[0] < measured.BAND[0] * 0.5  # the first try alone was well under
    calls.clear()
    again, _, ms_again = measured.prune_to_measured(model, cfg, importance.Magnitude(), table)
    assert len(calls) == 2 and ms_again == (before, after)
    assert [p.shape for p in again.parameters()] == [p.shape for p in pruned.parameters()]


def test_corrections_interpolate_where_the_table_errs_more_as_the_model_shrinks():
    """A runtime whose measured share is the predicted share squared (per-conv overheads a whole model hides): moving
    the aim by the last error overshoots both ways; interpolating between tries on either side of the budget lands in
    the band within the corrections allowed."""
    from ultra_prune.latency import measured

    def attempt(ratio):
        kept = (1 - ratio) ** 2
        return measured.Try(kept, ratio, None, {"latency_ms": (1.0, 1 - ratio)}, (1.0, kept))

    chosen = measured._corrected(attempt(0.5), 0.5, attempt, "squared", verbose=False)
    assert measured.BAND[0] * 0.5 <= chosen.kept <= measured.BAND[1] * 0.5
    assert chosen.ratio < 0.5  # less pruned than the first aim, which measured 0.25 against a budget of 0.5


def test_a_pruning_made_again_with_less_does_not_warn_of_floors(tmp_path, exact_timing, monkeypatch, log):
    """The kept try asked for less than prune= (it measured under budget), so it predicts more than half the latency:
    the floors did not stop it, and no 'cannot be reached' warning is given."""
    from ultra_prune.commands import prune as api
    from ultra_prune.io.checkpoint import save_model

    model = base("yolov8n.yaml")
    full = sum(separable(s, c.in_channels, c.out_channels) for c, s in convs(model, IMGSZ).items())
    monkeypatch.setattr(latency, "cache_path", lambda: tmp_path / "latency.json")
    monkeypatch.setattr(runtimes, "runtime_for", lambda name, device=None, *_, **__: Faster(full))
    src = save_model(model, tmp_path / "base.pt")
    _, report = api.prune(src, prune=0.5, prune_by="latency", prune_round=8, imgsz=IMGSZ, verbose=False)
    before, after = report.latency_predicted
    assert after / before > 0.5 * 1.001  # the kept try asked for less than half
    assert not [m for m in log if "cannot be reached" in m]


def test_sparsity_target_by_latency_trains_to_a_recorded_prune(tmp_path, data_yaml, exact_timing, monkeypatch):
    """On a synthetic runtime (the real ones are timed by the long tests): the target is a share of the predicted
    latency, ``prune_round=auto`` is resolved and recorded, and ``prune`` reads both from the checkpoint."""
    from conftest import train_kwargs
    from ultralytics import YOLO

    from ultra_prune.commands.prune import prune

    monkeypatch.setattr(latency, "cache_path", lambda: tmp_path / "latency.json")
    monkeypatch.setattr(runtimes, "runtime_for", lambda name, device=None, *_, **__: Synthetic())
    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "lat", epochs=2, sparsity_target=0.5,
                                                                   prune_by="latency"))
    last = tmp_path / "lat" / "weights" / "last.pt"
    args = torch.load(last, map_location="cpu", weights_only=False)["train_args"]
    assert args["prune_by"] == "latency" and args["prune_round"] in (8, 16, 32)  # auto, resolved and recorded
    header, *rows = [[v.strip() for v in row.split(",")]
                     for row in (tmp_path / "lat" / "results.csv").read_text().splitlines()]
    assert float(rows[-1][header.index("sparsity/reached")]) >= 0.5 - 1e-6  # a share of the predicted latency
    _, report = prune(last, verbose=False)  # the recorded target: the zeroed channels, counted in latency
    assert report.prune_by == "latency" and report.prune_importance == "zeroed" and report.removed_channels > 0
    (pb, pa), (mb, ma) = report.latency_predicted, report.latency_measured
    assert pa <= 0.5 * pb * 1.001 and mb > 0 and ma > 0

"""Depth: residual blocks removed whole where every layer at its floor still misses a budget (``prune_depth``).

Models are built from yaml with random BatchNorms (no training, no downloads).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from helpers import IMGSZ, build, calibrate, check_consistent, n_params, run, tensors
from ultra_prune.pruning import analyse, prune_model
from ultra_prune.pruning.cost import LatencyModel, WidthCount
from ultra_prune.pruning.surgery import remove_blocks

pytestmark = pytest.mark.usefixtures("one_thread")

# yaml: (residual blocks, of which in a C2f-style owner whose cv2 folds the removed slice)
MODELS = {"yolov8n.yaml": (6, 6), "yolo26n.yaml": (13, 2), "yolov5nu.yaml": (7, 0)}


def residual_bottlenecks(model) -> int:
    return sum(1 for m in model.modules() if type(m).__name__ == "Bottleneck" and m.add)


@pytest.mark.parametrize("yaml", MODELS)
def test_every_residual_bottleneck_is_a_block(yaml):
    model = build(yaml)
    graph = analyse(model)
    assert len(graph.blocks) == residual_bottlenecks(model) == MODELS[yaml][0]
    assert sum(b.owner is not None for b in graph.blocks) == MODELS[yaml][1]
    for b in graph.blocks:
        assert b.parent[b.index] is b.module and b.out is b.module.cv2.conv
        (hidden,) = b.hidden(graph.roots())  # cv1's output: made and read inside the block
        assert hidden.producers == [(b.module.cv1, 0)]


def _zero_branch(block) -> None:
    """``f(x) = act(bn(conv(...)))`` with the branch's last BN at gamma = beta = 0: f = act(0) = 0 everywhere."""
    with torch.no_grad():
        block.module.cv2.bn.weight.zero_()
        block.module.cv2.bn.bias.zero_()


@pytest.mark.parametrize("yaml", MODELS)
def test_removing_blocks_whose_branch_is_zero_changes_no_output(yaml):
    """Taking a block out leaves exactly ``x`` where it computed ``x + f(x)``: with f = 0 every output stays (the C2f
    owners' cv2 weights folded); with f != 0 the outputs move, so the comparison can fail (BatchNorm statistics
    calibrated on random images, so that features do not fade to constants)."""
    model = calibrate(build(yaml))
    for zero, close in ((True, True), (False, False)):
        m = copy.deepcopy(model)
        blocks = analyse(m).blocks
        if zero:
            for b in blocks:
                _zero_branch(b)
        before = [t.clone() for t in tensors(run(m))]
        remove_blocks(blocks)
        check_consistent(m)
        assert residual_bottlenecks(m) == 0
        after = tensors(run(m))
        assert [t.shape for t in after] == [t.shape for t in before]
        same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(after, before))
        assert same is close, f"zero branch {zero}: outputs {'moved' if close else 'stayed'}"


def test_removing_part_of_a_c2f_folds_the_right_slices():
    """Two blocks of one C2f (yolov8n layer 4 has two), the second one alone, then the first: each time the outputs
    stay with the removed branch at zero, and cv2 reads one block's width less."""
    model = calibrate(build("yolov8n.yaml"))
    for which in ([1], [0], [0, 1]):
        m = copy.deepcopy(model)
        blocks = [b for b in analyse(m).blocks if b.owner is m.model[4] and b.index in which]
        for b in blocks:
            _zero_branch(b)
        cin, c = m.model[4].cv2.conv.in_channels, m.model[4].c
        before = [t.clone() for t in tensors(run(m))]
        gone = {c for b in blocks for c in b.module.modules() if isinstance(c, nn.Conv2d)}
        assert gone <= WidthCount(m, IMGSZ).area.keys()
        remove_blocks(blocks)
        assert len(m.model[4].m) == 2 - len(which)
        assert m.model[4].cv2.conv.in_channels == cin - c * len(which)
        count = WidthCount(m, IMGSZ)  # the same model object, changed in place: counted afresh
        assert not gone & count.area.keys() and count.cin[m.model[4].cv2.conv] == cin - c * len(which)
        assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(tensors(run(m)), before))


def _out_of_floors_reach(model, imgsz: int = 128) -> float:
    """A share of the GFLOPs that every layer at its floor cannot remove, but the floors with every block gone can."""
    from ultralytics.utils.torch_utils import get_flops

    g0 = get_flops(model, imgsz)
    floor, bottom = (get_flops(prune_model(model, 0.999, 8, 8, "flops", imgsz, depth=d)[0], imgsz) / g0
                     for d in (False, True))
    assert bottom < floor
    return 1 - (floor + 3 * bottom) / 4


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo26n.yaml"])
def test_depth_only_where_the_floors_stop_the_budget(yaml):
    """A reachable budget prunes exactly as without depth; one the floors cannot reach removes blocks (not all of
    them where fewer do), and the pruned model then meets it by ultralytics' own count."""
    from ultralytics.utils.torch_utils import get_flops

    model = build(yaml)
    a, info_a = prune_model(model, 0.5, 8, 8, "flops", 128, depth=True)
    b, _ = prune_model(model, 0.5, 8, 8, "flops", 128)
    assert info_a["removed_blocks"] == [] and n_params(a) == n_params(b)
    assert [p.shape for p in a.parameters()] == [p.shape for p in b.parameters()]

    g0, ratio = get_flops(model, 128), _out_of_floors_reach(model)
    shallow, info_s = prune_model(model, ratio, 8, 8, "flops", 128)
    deep, info_d = prune_model(model, ratio, 8, 8, "flops", 128, depth=True)
    assert info_s["removed_blocks"] == [] and get_flops(shallow, 128) > (1 - ratio) * g0  # the floors stop it
    assert 0 < len(info_d["removed_blocks"]) < len(analyse(model).blocks)
    assert get_flops(deep, 128) <= (1 - ratio) * g0 * 1.001
    assert info_d["removed_channels"] > info_s["removed_channels"]
    assert residual_bottlenecks(deep) == residual_bottlenecks(model) - len(info_d["removed_blocks"])
    check_consistent(deep)
    assert all(torch.isfinite(t).all() for t in tensors(run(deep)))
    # a share of the channels is a count of channels: no block goes for it, however far out of reach
    assert prune_model(model, 0.999, 8, 8, "channels", 128, depth=True)[1]["removed_blocks"] == []


class AreaTimes:
    """A stand-in latency table: a conv's time grows with its output area and both widths."""

    def ms(self, shape, cin, cout, full):
        return shape.height * shape.width * (cin * cout + cout) * shape.kernel[0] * shape.kernel[1] * 1e-6


def test_latency_prediction_after_removing_blocks_is_the_pruned_models():
    """The cost model's bookkeeping of removed blocks (their convs gone, cv2 reading one slice less) predicts what a
    fresh latency model of the pruned model gives."""
    model = build("yolo26n.yaml")
    times = AreaTimes()
    latency = lambda m, s: LatencyModel(m, s, times)  # noqa: E731
    pruned, info = prune_model(model, 0.999, 8, 8, "latency", 128, depth=True, latency=latency)
    assert len(info["removed_blocks"]) == len(analyse(model).blocks)
    before, after = info["latency_ms"]
    assert after == pytest.approx(LatencyModel(pruned, 128, times).latency(), rel=1e-9)
    assert after < prune_model(model, 0.999, 8, 8, "latency", 128, latency=latency)[1]["latency_ms"][1]


def test_depth_pruned_checkpoint_reloads_prunes_again_and_exports(tmp_path):
    """Only stock classes: plain ultralytics loads it; the pruner analyses it again (fewer blocks); ONNX runs it."""
    import numpy as np
    import onnxruntime as ort
    from ultralytics import YOLO

    from ultra_prune.io.checkpoint import save_model

    model = build("yolov8n.yaml")
    pruned, info = prune_model(model, 0.999, 8, 8, "flops", 128, depth=True)
    path = save_model(pruned, tmp_path / "deep.pt")
    loaded = YOLO(str(path)).model.float().eval()
    assert len(analyse(loaded).blocks) == len(analyse(model).blocks) - len(info["removed_blocks"])
    again, info2 = prune_model(loaded, 0.5, 8, 8, "channels", IMGSZ, depth=True)
    check_consistent(again)
    onnx = YOLO(str(path)).export(format="onnx", imgsz=IMGSZ)
    x = np.random.default_rng(0).random((1, 3, IMGSZ, IMGSZ), dtype=np.float32)
    got = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        ref = loaded(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-3 * max(np.abs(ref).max(), 1.0)


def test_prune_depth_through_the_api(tmp_path):
    """``prune_depth`` reaches the pruner from ``api.prune`` (on by default, in the report), and is validated."""
    from ultra_prune.commands.prune import prune
    from ultra_prune.config.keys import validate
    from ultra_prune.io.checkpoint import save_model
    from ultra_prune.errors import UltraPruneError

    src = save_model(build("yolov8n.yaml"), tmp_path / "m.pt")
    ratio = _out_of_floors_reach(build("yolov8n.yaml"))
    deep, report = prune(src, prune=ratio, prune_by="flops", imgsz=128, prune_out=tmp_path / "deep.pt",
                         verbose=False, report_files=False)
    assert report.removed_blocks and "residual blocks removed whole" in report.text()
    assert report.gflops[1] <= (1 - ratio) * report.gflops[0] * 1.001
    shallow, report2 = prune(src, prune=ratio, prune_by="flops", imgsz=128, prune_out=tmp_path / "shallow.pt",
                             prune_depth=False, verbose=False, report_files=False)
    assert report2.removed_blocks == [] and residual_bottlenecks(shallow) == residual_bottlenecks(build("yolov8n.yaml"))
    with pytest.raises(UltraPruneError, match=r"'prune_depth=maybe' is not a boolean"):
        validate({"prune_depth": "maybe"})

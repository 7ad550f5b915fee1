"""Channel rules for the blocks beyond YOLOv8's: attention (C2PSA/PSABlock/PSA/Attention, A2C2f/ABlock/AAttn), C2,
SPP, Ghost, YOLOv10 (C2fCIB/CIB/RepVGGDW, SCDown, v10Detect) and YOLOv9 (RepNCSPELAN4/ELAN1, RepCSP/RepConv, AConv,
ADown, SPPELAN, CBLinear/CBFuse); and the prunable share of every shipped detection yaml, so that a block a new
ultralytics adds shows up here as a failure.

Models are built from yaml (no downloads, no training), the smallest shipped yaml that uses each block, with
seeded random BatchNorm scales and shifts, half of every BN's gammas exactly 0, and running statistics calibrated on
random images: with random statistics the features fade to spatial constants a few blocks deep, and then attention
(for one) computes the same output whatever its weights, so an exactness check there would prove nothing.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import check_rounding, zero_share, build, calibrate, check_consistent, circular_padding, n_params, out_shapes, run, shipped
import ultra_prune.pruning as pruning
from ultra_prune.pruning import prune_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _load_bench():
    path = Path(__file__).parent.parent / "benchmarks" / "bench_coverage.py"
    spec = importlib.util.spec_from_file_location("bench_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()

# family: (candidate yamls, the first shipped one is used; blocks it exercises, those present must lose channels)
FAMILIES = {
    "C2PSA": (["yolo11n.yaml"], ["C2PSA", "PSABlock", "Attention"]),
    "C3k2-PSABlock": (["yolo26n.yaml"], ["C3k2", "PSABlock", "Attention"]),
    "C2": (["yolov8n-p6.yaml"], ["C2"]),
    "SPP": (["yolov3-spp.yaml"], ["SPP"]),
    "Ghost": (["yolov8n-ghost.yaml"], ["GhostConv", "C3Ghost", "GhostBottleneck"]),
    "YOLOv10": (["yolov10n.yaml"], ["C2fCIB", "CIB", "RepVGGDW", "SCDown", "PSA", "Attention", "v10Detect"]),
    "ELAN": (["yolov9t.yaml", "yolov9c.yaml"],
             ["RepNCSPELAN4", "ELAN1", "RepCSP", "RepBottleneck", "RepConv", "AConv", "ADown", "SPPELAN"]),
    "ADown": (["yolov9c.yaml"], ["ADown", "RepNCSPELAN4", "SPPELAN"]),
    "CBFuse": (["yolov9e.yaml"], ["CBLinear", "ADown", "RepNCSPELAN4"]),
    "A2C2f": (["yolo12n.yaml"], ["A2C2f", "ABlock", "AAttn"]),
    "A2C2f-residual": (["yolo12l.yaml"], ["A2C2f", "ABlock", "AAttn"]),
}

# The prunable share (bench_coverage: prunable channels / BatchNorm channels) of each shipped yaml's smallest model, as
# measured on ultralytics 8.4.190 (8.2.18 ships a subset; its values are the same or higher).
# A residual group or a depthwise conv counts once however many BatchNorms it spans, so families made of them stay
# well under 100 % even with nothing left intact; BN_FLOOR (every BN of a prunable group counted) is 100 % then.
FLOOR = {
    "yolo11": 0.78, "yolo12": 0.64, "yolo26": 0.68, "yolo26-p2": 0.69, "yolo26-p6": 0.72, "yolov10": 0.65,
    "yolov3": 0.62, "yolov3-spp": 0.63, "yolov3-tiny": 0.99, "yolov5": 0.92, "yolov5-p6": 0.93, "yolov6": 0.97,
    "yolov8": 0.93, "yolov8-p2": 0.94, "yolov8-p6": 0.94, "yolov8-ghost": 0.72, "yolov8-ghost-p2": 0.73,
    "yolov8-ghost-p6": 0.71, "yolov9": 0.74,
    # segment, pose, obb, classify
    "yolov8-seg": 0.92, "yolov8-seg-p6": 0.93, "yolov9-seg": 0.87, "yolo11-seg": 0.78, "yolo12-seg": 0.64,
    "yolo26-seg": 0.69, "yolov8-pose": 0.93, "yolov8-pose-p6": 0.94, "yolo11-pose": 0.79, "yolo12-pose": 0.65,
    "yolo26-pose": 0.71, "yolov8-obb": 0.93, "yolo11-obb": 0.79, "yolo12-obb": 0.64, "yolo26-obb": 0.69,
    "yolov8-cls": 0.90, "yolov8-cls-resnet50": 0.45, "yolov8-cls-resnet101": 0.39, "yolo11-cls": 0.86,
    "yolo12-cls": 0.64, "yolo26-cls": 0.86,
}
# segmentation: Proto's first conv feeds a transposed conv (its channels stay)
SEGMENT = ("yolov8-seg", "yolov8-seg-p6", "yolov9-seg", "yolo11-seg", "yolo12-seg", "yolo26-seg")
BN_FLOOR = {"yolov6": 0.97, **dict.fromkeys(SEGMENT, 0.98)}  # the rest: 1.0
# what may stay intact in a family's smallest model (a new block without a rule fails everywhere else); larger
# models also keep CBFuse's input (yolov9e) and A2C2f's gamma residual (yolo12l/x), see bench_coverage.py
ALLOWED_INTACT = {"yolov6": ("ConvTranspose2d",), **dict.fromkeys(SEGMENT, ("ConvTranspose2d",))}


def first_shipped(family: str) -> str:
    for yaml in FAMILIES[family][0]:
        if shipped(yaml):
            return yaml
    pytest.skip(f"no yaml of {FAMILIES[family][0]} is shipped with this ultralytics")


@functools.lru_cache(maxsize=None)
def model(family: str):
    """The family's model, never modified (prune_model works on a deep copy)."""
    return calibrate(build(first_shipped(family), seed=3, zero_frac=0.5))


def present(family: str) -> list[str]:
    names = {type(m).__name__ for m in model(family).modules()}
    blocks = [b for b in FAMILIES[family][1] if b in names]
    assert blocks, f"{family}: none of {FAMILIES[family][1]} in {first_shipped(family)}"
    return blocks


def block_channels(m: nn.Module, block: str) -> int:
    """BatchNorm channels inside every ``block`` instance, plus input channels of their BN-free convs."""
    total = 0
    for b in m.modules():
        if type(b).__name__ == block:
            for c in b.modules():
                if isinstance(c, nn.BatchNorm2d):
                    total += c.num_features
                elif isinstance(c, nn.Conv2d) and not any(isinstance(x, nn.BatchNorm2d) for x in b.modules()):
                    total += c.in_channels
    return total


@functools.lru_cache(maxsize=None)
def pruned(family: str, ratio: float):
    return prune_model(model(family), ratio, 8, 8)


# --- 1. every rule prunes, and the model stays consistent -------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.3, 0.6])
@pytest.mark.parametrize("family", FAMILIES)
def test_prune_family(family, ratio):
    orig = model(family)
    p, info = pruned(family, ratio)
    assert info["pruned"]
    check_rounding(model(family), info, ratio, 8)
    assert n_params(p) < n_params(orig)
    check_consistent(p)
    assert out_shapes(run(p)) == out_shapes(run(orig))
    assert not [x for x in info["left_intact"] if "no channel rule" in x or "unexpected" in x], info["left_intact"]
    if ratio == 0.6:
        for block in present(family):
            assert block_channels(p, block) < block_channels(orig, block), f"{block} lost no channels"


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_family_fuses(family):
    """The deployed form: ``fuse()`` (Conv+BN, RepConv, RepVGGDW) of the pruned model computes the same features."""
    p = copy.deepcopy(pruned(family, 0.6)[0]).eval()
    feats = []
    hook = p.model[-1].register_forward_pre_hook(lambda m, args: feats.append([f.clone() for f in args[0]]))
    try:
        run(p, 128)
        p.fuse(verbose=False)
        run(p, 128)
    finally:
        hook.remove()
    for a, b in zip(*feats):  # float32 folding: the unpruned models differ by up to ~1e-4 of the range too
        assert (a - b).abs().max() <= 1e-3 * a.abs().max()


def test_attention_heads_stay_consistent():
    """Attention (C2PSA) and AAttn (A2C2f) lose head channels in equal counts per head, with their dims updated."""
    families = [f for f in ("C2PSA", "C3k2-PSABlock", "YOLOv10", "A2C2f") if any(map(shipped, FAMILIES[f][0]))]
    if not families:
        pytest.skip("no yaml with attention blocks is shipped with this ultralytics")
    changed = 0
    for family in families:
        orig, (p, _) = model(family), pruned(family, 0.6)
        before = dict(orig.named_modules())
        for name, m in p.named_modules():
            if type(m).__name__ == "Attention":
                assert m.qkv.conv.out_channels == m.num_heads * (2 * m.key_dim + m.head_dim), name
                assert m.proj.conv.in_channels == m.pe.conv.out_channels == m.num_heads * m.head_dim, name
                assert m.scale == pytest.approx(m.key_dim**-0.5), name
                changed += (m.key_dim, m.head_dim) != (before[name].key_dim, before[name].head_dim)
            elif type(m).__name__ == "AAttn":
                assert m.qkv.conv.out_channels == 3 * m.all_head_dim == 3 * m.num_heads * m.head_dim, name
                assert m.proj.conv.in_channels == m.pe.conv.out_channels == m.all_head_dim, name
                changed += m.head_dim != before[name].head_dim
            elif type(m).__name__ in {"C2PSA", "PSA", "RepNCSPELAN4", "ELAN1", "C2"}:
                assert m.cv1.conv.out_channels == 2 * m.c, name
    assert changed, "no attention head lost channels at prune=0.6"


# --- 2. exactness: pruning zero-gamma channels leaves every head output unchanged ----------------------------------
def head_outputs(m: nn.Module, imgsz: int = 128) -> list[torch.Tensor]:
    """Raw outputs of the head's final convs (box and class, every level, both branches of end-to-end heads),
    computed in float64 with circular padding."""
    m = copy.deepcopy(m).double()
    head, outs = m.model[-1], []
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for branch in getattr(head, name, None) or []:
            branch[-1].register_forward_hook(lambda mod, i, o: outs.append(o.detach()))
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with circular_padding(m.eval()), torch.no_grad():
        m(x)
    return outs


def max_rel_error(a_outs, b_outs) -> float:
    assert len(a_outs) == len(b_outs) > 0
    return max(((a - b).abs().max() / a.abs().max()).item() for a, b in zip(a_outs, b_outs))


def zero_ratio(m: nn.Module) -> float:
    """90 % of the share of prunable channels whose gamma is 0 in every BN of their group."""
    frac = zero_share(m)
    assert frac > 0.3
    return 0.9 * frac


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_gamma_pruning_is_exact(family, monkeypatch):
    """Every head output, borders included. The pruned model's folded constants are float32 sums (its weights are
    float32), and BatchNorms of small variance amplify that rounding: up to ~1e-4 of the output's range here (done
    in float64 throughout, the same pruning matches to 1e-12)."""
    orig = model(family)
    ratio = zero_ratio(orig)
    want = head_outputs(orig)
    p, info = prune_model(orig, ratio, 1, 1)
    assert info["removed_channels"] > 0.25 * info["prunable_channels"]
    for block in present(family):
        assert block_channels(p, block) < block_channels(orig, block), f"{block} lost no channels"
    exact = max_rel_error(want, head_outputs(p))
    assert exact < 5e-4, f"pruned outputs differ by {exact:.2e} (relative) from the original"
    # the control: without folding the removed channels' constants into their consumers, the outputs move
    monkeypatch.setattr(pruning, "compensate", lambda keep: None)
    err = max_rel_error(want, head_outputs(prune_model(orig, ratio, 1, 1)[0]))
    assert err > 100 * exact, f"uncompensated error {err:.2e} vs compensated {exact:.2e}"


# --- 3. the deployed model: ONNX export and onnxruntime agree -----------------------------------------------------
@pytest.mark.parametrize("family", ["C2PSA", "A2C2f", "Ghost"])
def test_onnx_export_matches_torch(family, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from ultralytics import YOLO

    from ultra_prune.io.checkpoint import load_model, save_model

    p, _ = pruned(family, 0.6)
    path = save_model(p, tmp_path / "p.pt")
    onnx_path = YOLO(str(path)).export(format="onnx", imgsz=64, verbose=False)
    reference, _ = load_model(path)  # the fp16-stored weights, as the export saw them
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference.eval()(x)[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert got.shape == want.shape
    for part in (slice(0, 4), slice(4, None)):  # boxes (pixels) and class scores, each on its own scale
        a, b = got[:, part], want[:, part]
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


# --- 4. every shipped yaml: the prunable share does not fall, no block is left without a rule -------------------------
DETECT, _ = bench.yamls(scales="n")  # each family's smallest model (yolov9: t, or c where t is not shipped)


@pytest.mark.parametrize("family", sorted(DETECT))
def test_prunable_share_floor(family):
    assert family in FLOOR, (f"new yaml family '{family}': measure it with benchmarks/bench_coverage.py, "
                             "add rules for its blocks and its floor here")
    (name,) = DETECT[family]
    c = bench.coverage(build(name))
    assert c["share"] >= FLOOR[family], f"{name}: prunable share {c['share']:.1%} < {FLOOR[family]:.0%}"
    assert c["bn_share"] >= BN_FLOOR.get(family, 1.0), f"{name}: {c['bn_share']:.1%} of BN channels prunable"
    allowed = ALLOWED_INTACT.get(family, ())
    assert all(x.startswith(allowed) for x in c["intact"]) if allowed else not c["intact"], c["intact"]

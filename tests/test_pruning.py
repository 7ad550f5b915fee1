"""The pruning engine (``ultra_prune.pruning``) on detection models built from yaml: no training, no downloads.

Every model is built once per module and its BatchNorm scales are randomised (seeded) first, so the global
|gamma| ranking is non-trivial (a fresh model has every gamma = 1).
"""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from helpers import check_rounding, most_removable, zero_share, base, build, check_consistent, n_params, out_shapes, run
import ultra_prune.pruning as pruning
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import is_pruned, prune_model

MODELS = ["yolov8n.yaml", "yolov8s.yaml", "yolov5nu.yaml", "yolo11n.yaml", "yolo26n.yaml"]
RATIOS = [0.1, 0.3, 0.5, 0.7, 0.9]
ROUNDS = [1, 8]
IMGSZ = 64


# --- helpers --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def original_shapes(yaml: str):
    return out_shapes(run(base(yaml)))


def conv_blocks(model: nn.Module) -> dict:
    """name -> ultralytics Conv-like block (``conv`` + ``bn``)."""
    return {n: m for n, m in model.named_modules() if isinstance(getattr(m, "bn", None), nn.BatchNorm2d)
            and isinstance(getattr(m, "conv", None), nn.Conv2d)}


def kept_counts(orig: nn.Module, pruned: nn.Module):
    """(name, original, kept) per independently kept channel group of each conv block: C2f/C3k2 ``cv1`` as its
    two chunk halves, everything else as the block's output channels."""
    chunked = {f"{n}.cv1" for n, m in orig.named_modules() if type(m).__name__ in {"C2f", "C3k2"}}
    after = conv_blocks(pruned)
    for name, m in conv_blocks(orig).items():
        o, k = m.conv.out_channels, after[name].conv.out_channels
        if name in chunked:
            assert k % 2 == 0, f"{name}: odd width {k} cannot be chunked in two halves"
            yield f"{name}[half]", o // 2, k // 2
        else:
            yield name, o, k


# --- 1. every model x ratio x round ---------------------------------------------------------------------------
_params: dict = {}


def pruned_params(yaml, ratio, round_to):
    key = (yaml, ratio, round_to)
    if key not in _params:
        _params[key] = n_params(prune_model(base(yaml), ratio, round_to, 1)[0])
    return _params[key]


@pytest.mark.parametrize("round_to", ROUNDS)
@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("yaml", MODELS)
def test_prune_sweep(yaml, ratio, round_to):
    orig = base(yaml)
    p, info = prune_model(orig, ratio, round_to, 1)
    _params[(yaml, ratio, round_to)] = n_params(p)
    assert info["pruned"] and is_pruned(p) and not is_pruned(orig)
    check_rounding(orig, info, ratio, round_to, most_removable(yaml, round_to, 1))
    assert n_params(p) < n_params(orig)
    check_consistent(p)
    assert out_shapes(run(p)) == original_shapes(yaml)
    for name, o, k in kept_counts(orig, p):
        assert 1 <= k <= o, name
        assert k == o or k % round_to == 0, f"{name}: kept {k}/{o}, not a multiple of {round_to}"


@pytest.mark.parametrize("round_to", ROUNDS)
@pytest.mark.parametrize("yaml", MODELS)
def test_params_fall_as_ratio_rises(yaml, round_to):
    counts = [pruned_params(yaml, r, round_to) for r in RATIOS]
    assert all(a > b for a, b in zip(counts, counts[1:])), dict(zip(RATIOS, counts))
    assert counts[0] < n_params(base(yaml))


def test_original_untouched():
    orig = base("yolov8n.yaml")
    state = {k: v.clone() for k, v in orig.state_dict().items()}
    prune_model(orig, 0.5, 8, 8)
    after = orig.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_lowest_gammas_go_first():
    """The channels removed from a single-producer layer are exactly its lowest-|gamma| ones."""
    orig = base("yolov8n.yaml")
    p, _ = prune_model(orig, 0.5, 1, 1)
    bn0, bn1 = orig.model[0].bn, p.model[0].bn  # the stem conv: produced only by itself, read by layer 1
    k = bn1.num_features
    assert k < bn0.num_features
    kept = torch.sort(torch.topk(bn0.weight.abs(), k).indices).values
    assert torch.equal(bn1.weight, bn0.weight[kept])
    assert torch.equal(p.model[0].conv.weight, orig.model[0].conv.weight[kept])


def test_pruned_model_trains_one_step():
    """Train-mode forward and backward work on the pruned shapes (no optimiser step: no training here)."""
    p, _ = prune_model(base("yolov8n.yaml"), 0.5, 8, 8)
    p.train()
    out = p(torch.rand(2, 3, IMGSZ, IMGSZ))
    parts = (out["boxes"], out["scores"]) if isinstance(out, dict) else out  # a list of levels before 8.4
    loss = sum(v.float().pow(2).mean() for v in parts)
    loss.backward()
    assert all(q.grad is not None and q.grad.shape == q.shape for q in p.parameters() if q.requires_grad)


def test_prune_again():
    """A pruned model can be pruned again; the marker keeps the history and the original widths."""
    p1, info1 = prune_model(base("yolov8n.yaml"), 0.3, 8, 8)
    p2, info2 = prune_model(p1, 0.3, 8, 8)
    assert n_params(p2) < n_params(p1)
    assert info2["widths_before"] == info1["widths_after"]
    marker = getattr(p2, pruning.MARKER)
    assert len(marker["history"]) == 2 and marker["original_widths"] == info1["widths_before"]
    assert out_shapes(run(p2)) == original_shapes("yolov8n.yaml")


# --- 2. property: floors and rounding -------------------------------------------------------------------------
@settings(max_examples=6, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(ratio=st.floats(0.02, 0.95), floor=st.integers(1, 80), round_to=st.integers(1, 16))
@example(ratio=0.95, floor=1, round_to=1)
@example(ratio=0.9, floor=48, round_to=16)
@example(ratio=0.5, floor=3, round_to=5)
def test_floor_and_round_property(ratio, floor, round_to):
    orig = base("yolov8n.yaml")
    p, info = prune_model(orig, ratio, round_to, floor)
    check_consistent(p)
    assert out_shapes(run(p)) == original_shapes("yolov8n.yaml")
    check_rounding(orig, info, ratio, round_to, most_removable("yolov8n.yaml", round_to, floor))
    for name, o, k in kept_counts(orig, p):
        assert min(floor, o) <= k <= o, f"{name}: kept {k}/{o} < floor {floor}"
        assert k == o or k % round_to == 0, f"{name}: kept {k}/{o}, not a multiple of {round_to}"


def test_nothing_to_prune_at_floor():
    """A floor above every layer's width leaves the model as it is and says so."""
    orig = base("yolov8n.yaml")
    p, info = prune_model(orig, 0.5, 8, 4096)
    assert not info["pruned"] and info["removed_channels"] == 0 and not is_pruned(p)
    assert n_params(p) == n_params(orig)


# --- 3. exactness: pruning zero-gamma channels does not change the outputs --------------------------------------
EXACT_IMGSZ, BORDER = 256, 3  # P5 is 8x8; zero padding makes the borders differ, so compare the interior
EXACT_MODELS = ["yolov8n.yaml", "yolov5nu.yaml", "yolo11n.yaml", "yolo26n.yaml"]


def head_outputs(model: nn.Module, imgsz: int = EXACT_IMGSZ) -> list[torch.Tensor]:
    """Raw outputs of the Detect head's final convs (box and class, every level, every branch)."""
    head, outs, handles = model.model[-1], [], []
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        for branch in getattr(head, name, None) or []:
            handles.append(branch[-1].register_forward_hook(lambda m, i, o: outs.append(o.detach())))
    try:
        run(model, imgsz)
    finally:
        for h in handles:
            h.remove()
    return outs


def max_rel_error(a_outs, b_outs, border=BORDER) -> float:
    assert len(a_outs) == len(b_outs) > 0
    err = 0.0
    for a, b in zip(a_outs, b_outs):
        assert a.shape == b.shape
        inner = (slice(None), slice(None), slice(border, -border), slice(border, -border))
        err = max(err, ((a - b)[inner].abs().max() / a[inner].abs().max()).item())
    return err


@functools.lru_cache(maxsize=None)
def zero_gamma_model(yaml):
    return build(yaml, seed=3, zero_frac=0.5)


def zero_ratio(model) -> float:
    """The fraction of prunable channels whose gamma is 0 in every BN that must keep them (a residual group
    couples several). Pruning 90% of that many removes zero-gamma channels only, spread over the whole model."""
    frac = zero_share(model)
    assert frac > 0.3
    return 0.9 * frac


@pytest.mark.parametrize("yaml", EXACT_MODELS)
def test_zero_gamma_pruning_is_exact(yaml):
    orig = zero_gamma_model(yaml)
    p, info = prune_model(orig, zero_ratio(orig), 1, 1)
    assert info["removed_channels"] > 0.25 * info["prunable_channels"]
    assert n_params(p) < 0.9 * n_params(orig)
    err = max_rel_error(head_outputs(orig), head_outputs(p))
    assert err < 1e-4, f"pruned outputs differ by {err:.2e} (relative) from the original"


@pytest.mark.parametrize("yaml", EXACT_MODELS)
def test_exactness_check_catches_missing_compensation(yaml, monkeypatch):
    """The comparison above can fail: without folding the removed channels' constants, the outputs move."""
    orig = zero_gamma_model(yaml)
    ratio = zero_ratio(orig)
    exact = max_rel_error(head_outputs(orig), head_outputs(prune_model(orig, ratio, 1, 1)[0]))
    monkeypatch.setattr(pruning, "compensate", lambda keep: None)
    err = max_rel_error(head_outputs(orig), head_outputs(prune_model(orig, ratio, 1, 1)[0]))
    assert err > 5e-3 and err > 100 * exact, f"uncompensated error {err:.2e} vs compensated {exact:.2e}"


# --- 4. structure ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def pruned_half(yaml):
    return prune_model(base(yaml), 0.5, 8, 8)


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_c2f_halves_and_c(yaml):
    orig, (p, _) = base(yaml), pruned_half(yaml)
    blocks = [(n, m) for n, m in p.named_modules() if type(m).__name__ in {"C2f", "C3k2"}]
    assert blocks
    before = dict(orig.named_modules())
    changed = 0
    for name, m in blocks:
        assert m.cv1.conv.out_channels % 2 == 0, name
        assert m.c == m.cv1.conv.out_channels // 2, name
        assert m.cv1.bn.num_features == 2 * m.c, name
        changed += m.c != before[name].c
        # the first inner block reads one half
        first = m.m[0]
        first = first[0] if isinstance(first, nn.Sequential) else first
        inner = getattr(first, "cv1", None)
        if inner is not None:
            assert inner.conv.in_channels == m.c, name
        # the block's own forward (chunk) and its split_forward agree
        x = torch.rand(1, m.cv1.conv.in_channels, 8, 8)
        m.eval()
        with torch.no_grad():
            assert torch.allclose(m(x), m.forward_split(x), atol=1e-5), name
    assert changed, "no C2f/C3k2 lost channels at prune=0.5"


@pytest.mark.parametrize("yaml", MODELS)
def test_detect_head_outputs_intact(yaml):
    orig, (p, _) = base(yaml), pruned_half(yaml)
    h0, h1 = orig.model[-1], p.model[-1]
    assert (h1.nc, h1.reg_max, h1.no, h1.nl) == (h0.nc, h0.reg_max, h0.no, h0.nl)
    names = [n for n in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") if getattr(h0, n, None) is not None]
    for name in names:
        want = 4 * h0.reg_max if name.endswith("cv2") else h0.nc
        for b0, b1 in zip(getattr(h0, name), getattr(h1, name)):
            assert b1[-1].out_channels == want == b0[-1].out_channels, name
            assert b1[-1].bias.shape == (want,), name
    if h0.reg_max > 1:
        assert isinstance(h1.dfl.conv, nn.Conv2d)
        assert torch.equal(h1.dfl.conv.weight, h0.dfl.conv.weight)
        assert h1.dfl.conv.weight.shape == (1, h0.reg_max, 1, 1) and not h1.dfl.conv.weight.requires_grad
    else:
        assert isinstance(h1.dfl, nn.Identity)
    # the head's inner convs are pruned too
    inner0 = sum(b[0].conv.out_channels if hasattr(b[0], "conv") else b[0][-1].conv.out_channels
                 for b in h0.cv2)
    inner1 = sum(b[0].conv.out_channels if hasattr(b[0], "conv") else b[0][-1].conv.out_channels
                 for b in h1.cv2)
    assert inner1 < inner0


def test_yolo26_one2one_branches_pruned():
    orig, (p, _) = base("yolo26n.yaml"), pruned_half("yolo26n.yaml")
    h0, h1 = orig.model[-1], p.model[-1]
    assert getattr(h0, "one2one_cv2", None) is not None and getattr(h0, "one2one_cv3", None) is not None

    def widths(head, name):
        return [c.out_channels for b in getattr(head, name) for c in b.modules()
                if isinstance(c, nn.Conv2d) and c is not b[-1]]

    for name in ("one2one_cv2", "one2one_cv3"):
        assert sum(widths(h1, name)) < sum(widths(h0, name)), name
    assert out_shapes(run(p)) == original_shapes("yolo26n.yaml")  # one-to-many inference (the default here)
    try:  # end-to-end inference: the one-to-one branches decide, NMS-free
        h0.end2end = h1.end2end = True
        y0, y1 = run(orig), run(p)
    finally:
        h0.end2end = h1.end2end = False
    assert out_shapes(y1) == out_shapes(y0)
    y = y1[0] if isinstance(y1, tuple) else y1
    assert y.shape[0] == 1 and y.shape[-1] == 6 and torch.isfinite(y).all()  # (batch, max_det, xyxy+score+class)


# --- 5. refusals ----------------------------------------------------------------------------------------------
def test_fused_model_refused():
    fused = build("yolov8n.yaml").fuse(verbose=False)
    with pytest.raises(UltraPruneError, match="fused"):
        prune_model(fused, 0.5)


def test_model_without_head_rule_refused():
    from ultralytics.nn.tasks import RTDETRDetectionModel

    model = RTDETRDetectionModel("yolov8n-rtdetr.yaml", verbose=False)
    with pytest.raises(UltraPruneError, match="no channel rule for RTDETRDecoder"):
        prune_model(model, 0.5)


@pytest.mark.parametrize("kw", [dict(prune=-0.1), dict(prune=1.0), dict(prune=0.5, prune_round=0),
                                dict(prune=0.5, prune_min=0), dict(prune=0.5, prune_by="params")])
def test_bad_arguments_refused_by_the_api(kw):
    """The API layer validates; the pruning core takes only what it was given."""
    from ultra_prune.commands.prune import prune

    with pytest.raises(UltraPruneError):
        prune(base("yolov8n.yaml"), **kw)


# --- regressions: other stock detection models ------------------------------------------------------------------
def test_negative_layer_references():
    """yolov3-tiny reads ``f=-2`` (the layer before the previous one): the graph resolves it as ultralytics does."""
    orig = build("yolov3-tinyu.yaml")
    assert any(isinstance(m.f, int) and m.f < -1 for m in orig.model)
    p, info = prune_model(orig, 0.5, 8, 8)
    check_consistent(p)
    assert n_params(p) < 0.5 * n_params(orig)
    assert out_shapes(run(p)) == out_shapes(run(orig))


def test_yolov10_is_not_mistaken_for_fused():
    """RepVGGDW (yolov10) has ``conv`` and ``forward_fuse`` but no ``bn`` of its own, fused or not."""
    orig = build("yolov10n.yaml")
    p, info = prune_model(orig, 0.5, 8, 8)
    check_consistent(p)
    assert n_params(p) < n_params(orig)
    assert out_shapes(run(p)) == out_shapes(run(orig))
    with pytest.raises(UltraPruneError, match="fused"):
        prune_model(build("yolov10n.yaml").fuse(verbose=False), 0.5)

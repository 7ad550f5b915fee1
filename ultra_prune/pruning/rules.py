"""Channel rules for ultralytics modules, and the registry the graph finds them in (``rule_for``).

A rule is ``rule(graph, module, x) -> Signal``: it tells the graph how ``module`` maps the channels of its input
``x`` (a Signal, or a list of them for multi-input layers) to its output. The built-in rules are looked up by exact
type; plugins' rules (their ``ultra_prune_channel_rule`` hook, ``plugins.channel_rule``) are asked first, whether or
not the patches were applied, so a plugin can add a rule for a custom block or replace a built-in one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from ultra_prune.patches.versions import aattn_reads_all_head_dim
from ultra_prune.plugins import channel_rule
from ultra_prune.pruning.graph import Segment, Signal, Term


@dataclass(eq=False)
class ActSumTerm(Term):
    """``module.act`` of the summed ``inputs``: RepConv's ``act(conv1(x) + conv2(x))`` and RepVGGDW's
    ``act(conv(x) + conv1(x))``, whose branches have no activation of their own."""

    def constant(self, idx):
        return self.module.act(sum(t.constant(idx) for t in self.inputs)).detach()


@dataclass(eq=False)
class ReluSumTerm(Term):
    """``relu`` of the summed ``inputs``: ResNetBlock's ``relu(cv3(...) + shortcut(x))``."""

    def constant(self, idx):
        return torch.relu(sum(t.constant(idx) for t in self.inputs)).detach()


def _is_conv(m, groups_one: bool = True) -> bool:
    """An ultralytics Conv (``conv`` + BatchNorm ``bn``), with groups=1 when ``groups_one``."""
    ok = isinstance(getattr(m, "conv", None), nn.Conv2d) and isinstance(getattr(m, "bn", None), nn.BatchNorm2d)
    return ok and (not groups_one or m.conv.groups == 1)


def _depthwise(m, channels: int) -> bool:
    return _is_conv(m, False) and m.conv.groups == m.conv.in_channels == m.conv.out_channels == channels


def add_aligned(g, a, b):
    """``a + b`` where the two signals' segments need not line up (the graph splits spaces to make them)."""
    return g.add(*g.align(a, b))


def tie_pairwise(g, a, b) -> bool:
    """Require the segments of ``a`` and ``b`` (aligned first) to keep equal counts pair by pair."""
    a, b = g.align(a, b)
    if len(a) != len(b) or any(sa.size != sb.size for sa, sb in zip(a, b)):
        return False
    for sa, sb in zip(a, b):
        g.tie(sa.space.root(), sb.space.root())
    return True


def _finalize(g, m, **attrs) -> None:
    """After surgery, set ``m``'s attributes from its sliced convs (``attrs``: name -> callable of ``m``)."""
    g.finalizers.append(lambda: [setattr(m, k, f(m)) for k, f in attrs.items()])


def conv_rule(g, m, x):
    return g.conv(m, x)


def conv2d_rule(g, m, x):
    return g.conv2d(m, x)


def passthrough_rule(g, m, x):
    """Channel-wise ops that keep a constant channel constant (upsample, max-pool, identity)."""
    return x


def concat_rule(g, m, xs):
    return g.concat(xs) if getattr(m, "d", 1) == 1 else g.opaque(m, xs, f"Concat over dim {m.d}")


def sequential_rule(g, m, x):
    """nn.Sequential (and a ModuleList a block runs as a chain): each member reads the last one's output."""
    for i, sub in enumerate(m):
        x = g.run(sub, x)
        if isinstance(m, nn.Sequential):
            g.chained(m, i, sub)
    return x


def bottleneck_rule(g, m, x):
    """Bottleneck: ``x + cv2(cv1(x))`` (``add``; a residual block the pruner may remove whole), else without ``x``."""
    y = g.run(m.cv2, g.run(m.cv1, x))
    if not getattr(m, "add", False):
        return y
    if _is_conv(m.cv2, False):
        g.residual[m] = m.cv2.conv
    return g.add(x, y)


def c2f_rule(g, m, x):
    """C2f / C3k2: ``cv1`` output chunked in two equal halves; each block reads the last; all concatenated."""
    if not (isinstance(m.cv1, nn.Module) and hasattr(m.cv1, "conv") and m.cv1.conv.groups == 1):
        return g.opaque(m, x, "unexpected C2f layout")
    halves = g.conv(m.cv1, x, chunks=2)
    ys = [type(halves)([seg]) for seg in halves]
    folds = _is_conv(m.cv2) and isinstance(m.m, nn.ModuleList)  # a removed block's slice folds into cv2's
    for i, block in enumerate(m.m):
        ys.append(g.run(block, ys[-1]))
        if folds:
            g.chained(m.m, i, block, owner=m)
    g.finalizers.append(lambda: setattr(m, "c", m.cv1.conv.out_channels // 2))
    return g.run(m.cv2, g.concat(ys))


def c3_rule(g, m, x):
    """C3 / C3k: ``cv3(cat(m(cv1(x)), cv2(x)))``."""
    a = g.run(m.m, g.run(m.cv1, x))
    b = g.run(m.cv2, x)
    return g.run(m.cv3, g.concat([a, b]))


def sppf_rule(g, m, x):
    """SPPF: ``cv2(cat(y, m(y), m(m(y)), ...))`` with ``y = cv1(x)``, plus ``x`` when ``add`` (8.4+)."""
    y = g.run(m.cv1, x)
    out = g.run(m.cv2, g.concat([y] * (getattr(m, "n", 3) + 1)))
    return g.add(x, out) if getattr(m, "add", False) else out


def c2_rule(g, m, x):
    """C2: ``a, b = cv1(x).chunk(2)``; ``cv2(cat(m(a), b))``."""
    if not _is_conv(m.cv1) or m.cv1.conv.out_channels % 2:
        return g.opaque(m, x, "unexpected C2 layout")
    a, b = g.conv(m.cv1, x, chunks=2)
    y = g.run(m.m, Signal([a]))
    _finalize(g, m, c=lambda m: m.cv1.conv.out_channels // 2)
    return g.run(m.cv2, g.concat([y, Signal([b])]))


def spp_rule(g, m, x):
    """SPP: ``cv2(cat(y, pool1(y), pool2(y), ...))`` with ``y = cv1(x)`` (max-pools keep constants)."""
    y = g.run(m.cv1, x)
    return g.run(m.cv2, g.concat([y] * (len(m.m) + 1)))


def sppelan_rule(g, m, x):
    """SPPELAN: ``cv5(cat(y, cv2(y), cv3(cv2(y)), ...))`` with ``y = cv1(x)`` and cv2..cv4 max-pools."""
    y = g.run(m.cv1, x)
    return g.run(m.cv5, g.concat([y] * 4))


def ghostconv_rule(g, m, x):
    """GhostConv: ``y = cv1(x)``; ``cat(y, cv2(y))`` with cv2 depthwise, so both halves are one channel space."""
    y = g.run(m.cv1, x)
    return g.concat([y, g.run(m.cv2, y)])


def ghostbottleneck_rule(g, m, x):
    """GhostBottleneck: ``conv(x) + shortcut(x)``. The GhostConv output is two copies of one space, so the
    identity shortcut's two halves are coupled channel by channel with it (the graph splits the input's space)."""
    return add_aligned(g, g.run(m.conv, x), g.run(m.shortcut, x))


def repconv_rule(g, m, x):
    """RepConv: ``act(conv1(x) + conv2(x))`` (3x3 and 1x1 branches, one channel space). The identity-BN branch
    (``bn=True``) and fused RepConvs stay intact."""
    if getattr(m, "bn", None) is not None or not (_is_conv(m.conv1) and _is_conv(m.conv2)) or hasattr(m, "conv"):
        return g.opaque(m, x, "fused RepConv or one with an identity branch")
    y = g.add(g.conv(m.conv1, x), g.conv(m.conv2, x))
    _finalize(g, m, c1=lambda m: m.conv1.conv.in_channels, c2=lambda m: m.conv1.conv.out_channels)
    return Signal(Segment(seg.space, (ActSumTerm(m, 0, seg.terms),)) for seg in y)


def repvggdw_rule(g, m, x):
    """RepVGGDW: ``act(conv(x) + conv1(x))``, both depthwise: the output keeps the input's channel spaces."""
    c = x.channels
    if not (hasattr(m, "conv1") and _depthwise(m.conv, c) and _depthwise(m.conv1, c)):
        return g.opaque(m, x, "fused RepVGGDW")
    a, b = g.conv(m.conv, x), g.conv(m.conv1, x)
    _finalize(g, m, dim=lambda m: m.conv.conv.out_channels)
    return Signal(Segment(sa.space, (ActSumTerm(m, 0, sa.terms + sb.terms),)) for sa, sb in zip(a, b))


def cib_rule(g, m, x):
    """CIB: ``x + cv1(x)`` (``add``), cv1 a Conv/depthwise/RepVGGDW sequence."""
    y = g.run(m.cv1, x)
    return add_aligned(g, x, y) if getattr(m, "add", False) else y


def scdown_rule(g, m, x):
    """SCDown: ``cv2(cv1(x))``, cv2 depthwise."""
    return g.run(m.cv2, g.run(m.cv1, x))


def elan_rule(g, m, x):
    """RepNCSPELAN4 / ELAN1: ``y = cv1(x).chunk(2)``; ``cv4(cat(y0, y1, cv2(y1), cv3(cv2(y1))))``."""
    if not _is_conv(m.cv1) or m.cv1.conv.out_channels % 2:
        return g.opaque(m, x, f"unexpected {type(m).__name__} layout")
    ys = [Signal([h]) for h in g.conv(m.cv1, x, chunks=2)]
    ys.append(g.run(m.cv2, ys[-1]))
    ys.append(g.run(m.cv3, ys[-1]))
    _finalize(g, m, c=lambda m: m.cv1.conv.out_channels // 2)
    return g.run(m.cv4, g.concat(ys))


def aconv_rule(g, m, x):
    """AConv: ``cv1(avg_pool2d(x, 2, 1))`` (the unpadded average pool keeps constants)."""
    return g.run(m.cv1, x)


def adown_rule(g, m, x):
    """ADown: ``x1, x2 = avg_pool(x).chunk(2)``; ``cat(cv1(x1), cv2(max_pool(x2)))``. ``chunk`` cuts the input
    in the middle, so its two halves must keep equal counts: the graph splits the input's spaces there and ties
    the halves."""
    if x.channels % 2:
        return g.opaque(m, x, "ADown of an odd channel count")
    x1, x2 = g.split(x, [x.channels // 2] * 2)
    x1, x2 = g.align(x1, x2)
    if not tie_pairwise(g, x1, x2):
        g.fix(x1, "ADown halves that cannot keep equal counts")
        g.fix(x2, "ADown halves that cannot keep equal counts")
    return g.concat([g.run(m.cv1, x1), g.run(m.cv2, x2)])


def cblinear_rule(g, m, x):
    """CBLinear: a bias conv (no BatchNorm) split into ``c2s`` outputs. Its input is pruned like any conv's;
    its outputs have no BN scales to rank, so they stay."""
    if m.conv.groups != 1:
        return g.opaque(m, x, "grouped CBLinear")
    g.consume(m.conv, x)
    return tuple(g.fixed_signal(c, "CBLinear outputs (no BatchNorm)") for c in m.c2s)


def cbfuse_rule(g, m, xs):
    """CBFuse: ``sum(interpolate(CBLinear outputs)) + xs[-1]``: the last input is added to BN-free channels, so
    its channels stay (the other inputs are CBLinear's, already fixed)."""
    target = xs[-1]
    if not isinstance(target, Signal):
        return g.opaque(m, xs, "unexpected CBFuse inputs")
    g.fix(target, "summed with CBLinear outputs (CBFuse)")
    g.intact.append("CBFuse (its input is summed with CBLinear's BatchNorm-free outputs)")
    return target


def _tie_all(g, signals, reason: str) -> None:
    """Require every signal of ``signals`` (one space each) to keep one common count; fix them all otherwise."""
    signals = [g.resolve(x) for x in signals]
    if all(len(x) == 1 for x in signals):
        for x in signals[1:]:
            g.tie(signals[0][0].space.root(), x[0].space.root())
    else:
        for x in signals:
            g.fix(x, reason)


def _heads(g, m, x, heads: int, kd: int, hd: int):
    """``m.qkv`` read from ``x`` and viewed per head as ``[q (kd), k (kd), v (hd)]``: returns (per head: the query
    and key channels coupled index by index, as they pair up in ``q.k``; per head: the values). A query/key pair
    whose scales are both 0 adds one constant to every logit, which the softmax cancels."""
    parts = g.split(g.conv(m.qkv, x), [kd, kd, hd] * heads)
    return [g.add(parts[3 * i], parts[3 * i + 1]) for i in range(heads)], parts[2::3]


@torch.no_grad()
def _rescale_queries(qkv, heads: int, kd: int, r: float) -> None:
    """Multiply every head's query channels (the first ``kd`` of each head's group in ``qkv``'s output) by ``r``."""
    if r != 1.0:
        per_head = qkv.conv.out_channels // heads
        for h in range(heads):
            qkv.bn.weight[h * per_head : h * per_head + kd] *= r
            qkv.bn.bias[h * per_head : h * per_head + kd] *= r


def _finalize_attention(m) -> None:
    """After surgery: Attention's key_dim/head_dim from its sliced convs; the queries scaled so that ``q * scale``
    (and ``scaled_dot_product_attention``'s own ``key_dim ** -0.5`` on the CoreML path) is what it was."""
    heads = m.num_heads
    hd = m.proj.conv.in_channels // heads
    kd = (m.qkv.conv.out_channels // heads - hd) // 2
    if kd != m.key_dim:
        _rescale_queries(m.qkv, heads, kd, m.scale * kd**0.5)
        m.scale = kd**-0.5
    m.key_dim, m.head_dim = kd, hd


def attention_rule(g, m, x):
    """Attention (PSABlock/PSA/C2PSA): ``qkv`` is viewed per head as ``[q (key_dim), k (key_dim), v (head_dim)]``;
    ``proj(v @ softmax(q.k * scale) + pe(v))`` with ``pe`` depthwise. A constant value channel stays constant
    through the softmax average. Every head keeps the same query/key count and the same value count; the output's
    ``.view(B, C, H, W)`` takes ``C`` from the input, so every head-sized share of the input keeps the value
    count too. ``key_dim``, ``head_dim`` and ``scale`` are updated after surgery."""
    heads, kd, hd = m.num_heads, m.key_dim, m.head_dim
    c = heads * hd
    if not (x.channels == c and _is_conv(m.qkv) and m.qkv.conv.out_channels == heads * (2 * kd + hd)
            and _depthwise(m.pe, c) and _is_conv(m.proj) and m.proj.conv.in_channels == c):
        return g.opaque(m, x, "unexpected Attention layout")
    qk, values = _heads(g, m, x, heads, kd, hd)
    _tie_all(g, qk, "attention queries/keys")
    _tie_all(g, values + g.split(x, [hd] * heads), "attention input of several spaces per head")
    v = g.concat(values)
    g.finalizers.append(lambda: _finalize_attention(m))
    return g.run(m.proj, g.add(v, g.run(m.pe, v)))


def _finalize_aattn(m) -> None:
    """After surgery: AAttn's head_dim/all_head_dim; its softmax scale is ``head_dim ** -0.5`` at run time, so
    the queries are scaled to keep ``q * scale`` what it was."""
    hd = m.proj.conv.in_channels // m.num_heads
    if hd != m.head_dim:
        _rescale_queries(m.qkv, m.num_heads, hd, (hd / m.head_dim) ** 0.5)
    m.head_dim, m.all_head_dim = hd, hd * m.num_heads


def aattn_rule(g, m, x):
    """AAttn (area attention): ``qkv`` viewed per head as ``[q, k, v]`` (``head_dim`` each);
    ``proj(v @ softmax(q.k * head_dim**-0.5) + pe(v))``, ``pe`` depthwise. Queries, keys and values of every head
    keep one common count; its input width is free (read by qkv only). Where ``forward`` reshapes by the input's
    width (8.3.x), it stays intact."""
    heads, hd = m.num_heads, m.head_dim
    c = heads * hd
    if not (aattn_reads_all_head_dim(type(m)) and _is_conv(m.qkv) and m.qkv.conv.out_channels == 3 * c
            and _depthwise(m.pe, c) and _is_conv(m.proj) and m.proj.conv.in_channels == c):
        return g.opaque(m, x, "area attention that reshapes by its input width")
    qk, values = _heads(g, m, x, heads, hd, hd)
    _tie_all(g, qk + values, "area-attention heads")
    v = g.concat(values)
    g.finalizers.append(lambda: _finalize_aattn(m))
    return g.run(m.proj, g.add(v, g.run(m.pe, v)))


def psablock_rule(g, m, x):
    """PSABlock: ``x = x + attn(x)``; ``x + ffn(x)`` (``add``; else without the residuals)."""
    res = getattr(m, "add", True)
    a = g.run(m.attn, x)
    x = add_aligned(g, x, a) if res else a
    f = g.run(m.ffn, x)
    return add_aligned(g, x, f) if res else f


def c2psa_rule(g, m, x):
    """C2PSA: ``a, b = cv1(x).split((c, c))``; ``cv2(cat(a, m(b)))``. PSA: the same with one inline attention
    block (``b = b + attn(b)``; ``b = b + ffn(b)``). ``c`` is updated after surgery."""
    if not _is_conv(m.cv1) or m.cv1.conv.out_channels % 2:
        return g.opaque(m, x, f"unexpected {type(m).__name__} layout")
    a, b = (Signal([h]) for h in g.conv(m.cv1, x, chunks=2))
    if hasattr(m, "m"):  # C2PSA
        b = g.run(m.m, b)
    else:  # PSA
        b = add_aligned(g, b, g.run(m.attn, b))
        b = add_aligned(g, b, g.run(m.ffn, b))
    _finalize(g, m, c=lambda m: m.cv1.conv.out_channels // 2)
    return g.run(m.cv2, g.concat([a, b]))


def ablock_rule(g, m, x):
    """ABlock: ``x = x + attn(x)``; ``x + mlp(x)``."""
    x = add_aligned(g, x, g.run(m.attn, x))
    return add_aligned(g, x, g.run(m.mlp, x))


def a2c2f_rule(g, m, x):
    """A2C2f: ``y = [cv1(x)]``, each block reads the last, ``cv2(cat(y))``; with ``gamma`` (residual, l/x scales)
    the output is ``x + gamma * cv2(...)``: a per-channel scale the graph does not model, so that residual's
    channels (the input's and cv2's outputs) stay."""
    if not _is_conv(m.cv1):
        return g.opaque(m, x, "unexpected A2C2f layout")
    ys = [g.run(m.cv1, x)]
    for block in m.m:
        ys.append(g.run(block, ys[-1]))
    out = g.run(m.cv2, g.concat(ys))
    if getattr(m, "gamma", None) is not None:
        g.fix(x, "A2C2f gamma-scaled residual")
        g.fix(out, "A2C2f gamma-scaled residual")
        g.intact.append("A2C2f (x + gamma * y residual channels)")
    return out


def resnetblock_rule(g, m, x):
    """ResNetBlock: ``relu(cv3(cv2(cv1(x))) + shortcut(x))``, the shortcut an identity or a 1x1 Conv."""
    y = add_aligned(g, g.run(m.cv3, g.run(m.cv2, g.run(m.cv1, x))), g.run(m.shortcut, x))
    return Signal(Segment(seg.space, (ReluSumTerm(m, 0, seg.terms),)) for seg in y)


def resnetlayer_rule(g, m, x):
    """ResNetLayer: its ``layer`` (a Conv and a max-pool, or ResNetBlocks)."""
    return g.run(m.layer, x)


def _run_branches(g, m, xs, names) -> None:
    """Run every per-level branch list of ``m`` named in ``names`` (absent or None ones skipped) on ``xs``."""
    for name in names:
        for branch, x in zip(getattr(m, name, None) or [], xs):
            g.run(branch, x)


def detect_rule(g, m, xs):
    """Detect and its task heads (Segment/Pose/OBB's ``cv4``: mask coefficients, keypoints, angles): per level,
    each branch's inner convs are pruned; final convs keep their outputs (4*reg_max, nc, nm, nk, ne).
    End-to-end heads (``one2one_*``) read the same features and are analysed like their one-to-many twins."""
    _run_branches(g, m, xs, ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4"))
    return None


def segment_rule(g, m, xs):
    """Segment / Segment26: the Detect branches and the mask-coefficient branch, plus ``proto`` (read from the
    first level, or from every level for Proto26)."""
    detect_rule(g, m, xs)
    g.run(m.proto, xs if hasattr(m.proto, "feat_refine") else xs[0])
    return None


def pose26_rule(g, m, xs):
    """Pose26: the Detect branches; ``cv4`` (two Convs) per level, read by the keypoint (``cv4_kpts``) and, while
    training, the keypoint-sigma (``cv4_sigma``) prediction convs."""
    _run_branches(g, m, xs, ("cv2", "cv3", "one2one_cv2", "one2one_cv3"))
    for pre in ("", "one2one_"):
        for i, (branch, x) in enumerate(zip(getattr(m, pre + "cv4", None) or [], xs)):
            y = g.run(branch, x)
            for tail in ("cv4_kpts", "cv4_sigma"):
                convs = getattr(m, pre + tail, None)
                if convs is not None:
                    g.run(convs[i], y)
    return None


def proto_rule(g, m, x):
    """Proto: ``cv3(cv2(upsample(cv1(x))))``. The upsample is a transposed conv whose response to a constant
    channel differs from pixel to pixel (no bias can absorb it), so ``cv1``'s channels stay; ``cv2``'s are pruned.
    ``cv3``'s outputs are the mask prototypes, a prediction output: they stay."""
    y = g.opaque(m.upsample, g.run(m.cv1, x), "transposed conv: a removed channel's constant is no bias")
    protos = g.run(m.cv3, g.run(m.cv2, y))
    g.fix(protos, "mask prototypes (a prediction output)")
    return protos


def proto26_rule(g, m, xs):
    """Proto26: ``feat = x[0] + sum(up(refine_i(x[i+1])))`` (nearest upsampling keeps constants, so every refine
    conv's output joins the first level's channel space); ``Proto(feat_fuse(feat))`` and, while training,
    ``semseg(feat)``."""
    feat = xs[0]
    for conv, x in zip(m.feat_refine, xs[1:]):
        feat = add_aligned(g, feat, g.run(conv, x))
    if getattr(m, "semseg", None) is not None:
        g.run(m.semseg, feat)
    return proto_rule(g, m, g.run(m.feat_fuse, feat))


def classify_rule(g, m, x):
    """Classify: ``linear(pool(conv(x)))`` (a list input is concatenated). Average pooling keeps a constant
    channel constant, so ``conv``'s channels are pruned with ``linear`` as their consumer."""
    x = x if isinstance(x, Signal) else g.concat(x)
    y = g.run(m.conv, x)
    g.consume(m.linear, y)
    return g.fixed_signal(m.linear.out_features, "class scores")


@lru_cache(maxsize=1)
def _rules():
    from ultralytics.nn.modules import block, conv, head

    table = {
        "Conv": conv_rule,
        "DWConv": conv_rule,
        "Concat": concat_rule,
        "Bottleneck": bottleneck_rule,
        "C2f": c2f_rule,
        "C3k2": c2f_rule,
        "C3": c3_rule,
        "C3k": c3_rule,
        "SPPF": sppf_rule,
        "Detect": detect_rule,
        "v10Detect": detect_rule,
        # task heads
        "Segment": segment_rule,
        "Segment26": segment_rule,
        "Proto": proto_rule,
        "Proto26": proto26_rule,
        "Pose": detect_rule,
        "Pose26": pose26_rule,
        "OBB": detect_rule,
        "OBB26": detect_rule,
        "Classify": classify_rule,
        # ResNet classifiers (yolov8-cls-resnet50/101)
        "ResNetLayer": resnetlayer_rule,
        "ResNetBlock": resnetblock_rule,
        # YOLO11 / YOLO26 / YOLOv10 attention
        "C2PSA": c2psa_rule,
        "PSA": c2psa_rule,
        "PSABlock": psablock_rule,
        "Attention": attention_rule,
        "C2fPSA": c2f_rule,
        # YOLOv8-p6 / YOLOv3-spp
        "C2": c2_rule,
        "SPP": spp_rule,
        # GhostNet blocks (yolov8-ghost)
        "GhostConv": ghostconv_rule,
        "GhostBottleneck": ghostbottleneck_rule,
        "C3Ghost": c3_rule,
        # YOLOv10
        "C2fCIB": c2f_rule,
        "CIB": cib_rule,
        "RepVGGDW": repvggdw_rule,
        "SCDown": scdown_rule,
        # YOLOv9
        "RepNCSPELAN4": elan_rule,
        "ELAN1": elan_rule,
        "RepCSP": c3_rule,
        "RepBottleneck": bottleneck_rule,
        "RepConv": repconv_rule,
        "AConv": aconv_rule,
        "ADown": adown_rule,
        "SPPELAN": sppelan_rule,
        "CBLinear": cblinear_rule,
        "CBFuse": cbfuse_rule,
        "Silence": passthrough_rule,
        # YOLO12
        "A2C2f": a2c2f_rule,
        "ABlock": ablock_rule,
        "AAttn": aattn_rule,
    }
    found = (getattr(block, n, None) or getattr(conv, n, None) or getattr(head, n, None) for n in table)
    classes = {cls: rule for cls, rule in zip(found, table.values())}
    classes.pop(None, None)
    classes.update({nn.Conv2d: conv2d_rule, nn.Sequential: sequential_rule, nn.ModuleList: sequential_rule})
    classes.update({nn.Upsample: passthrough_rule, nn.MaxPool2d: passthrough_rule, nn.Identity: passthrough_rule})
    classes.update({nn.ZeroPad2d: passthrough_rule})  # yolov3-tiny: zeros at the border only, like a conv's padding
    return classes


def rule_for(module):
    """The channel rule for ``module``: a plugin's (``plugins.channel_rule``), else the built-in one for its exact type
    (so a subclass with different wiring, e.g. YOLOEDetect or WorldDetect, stays opaque), else None."""
    rule = channel_rule(module)
    return rule if rule is not None else _rules().get(type(module))

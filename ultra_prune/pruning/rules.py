"""Built-in channel rules for ultralytics modules (a plugin of the ``ultra_prune_channel_rule`` hook).

A rule is ``rule(graph, module, x) -> Signal``: it tells the graph how ``module`` maps the channels of its input
``x`` (a Signal, or a list of them for multi-input layers) to its output. Third-party plugins can return their
own rule for a custom block; built-ins run last so plugins win.
"""

from __future__ import annotations

from functools import lru_cache

from torch import nn

from ultra_prune.hookspecs import hookimpl


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
    for sub in m:
        x = g.run(sub, x)
    return x


def bottleneck_rule(g, m, x):
    y = g.run(m.cv2, g.run(m.cv1, x))
    return g.add(x, y) if getattr(m, "add", False) else y


def c2f_rule(g, m, x):
    """C2f / C3k2: ``cv1`` output chunked in two equal halves; each block reads the last; all concatenated."""
    if not (isinstance(m.cv1, nn.Module) and hasattr(m.cv1, "conv") and m.cv1.conv.groups == 1):
        return g.opaque(m, x, "unexpected C2f layout")
    halves = g.conv(m.cv1, x, chunks=2)
    ys = [type(halves)([seg]) for seg in halves]
    for block in m.m:
        ys.append(g.run(block, ys[-1]))
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


def detect_rule(g, m, xs):
    """Detect: per level, each branch's inner convs are pruned; final convs keep 4*reg_max / nc outputs.
    End-to-end heads (``one2one_*``) read the same features and are analysed like their one-to-many twins."""
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        branches = getattr(m, name, None)
        if branches is None:
            continue
        for branch, x in zip(branches, xs):
            g.run(branch, x)
    return None


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
    }
    found = (getattr(block, n, None) or getattr(conv, n, None) or getattr(head, n, None) for n in table)
    classes = {cls: rule for cls, rule in zip(found, table.values())}
    classes.pop(None, None)
    classes.update({nn.Conv2d: conv2d_rule, nn.Sequential: sequential_rule, nn.ModuleList: sequential_rule})
    classes.update({nn.Upsample: passthrough_rule, nn.MaxPool2d: passthrough_rule, nn.Identity: passthrough_rule})
    return classes


@hookimpl(trylast=True)
def ultra_prune_channel_rule(module):
    """Exact-type lookup, so a subclass with different wiring (e.g. Segment, v10Detect) stays opaque."""
    return _rules().get(type(module))

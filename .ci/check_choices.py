"""Fingerprint the pruner's choices, to check that a refactor leaves them bit-identical.

    python .ci/check_choices.py OUT.json            write the fingerprints
    python .ci/check_choices.py OUT.json BEFORE.json write them, then exit 1 unless they equal BEFORE.json

Prunes seeded models of the test suite (detect, segment, classify) at several budgets (channels and FLOPs at
0.3 / 0.5 / 0.7, l1 and relative importances, FLOPs with whole-block removal, and latency under a fixed synthetic
table) through the core (``prune_model``), the prune command (``ultra_prune.prune``) and the sparse target's
choice, and records every kept width and a hash of every pruned tensor. Uses only public entry points, so the
same script runs on the layouts before and after a refactor.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import build  # noqa: E402

import ultra_prune  # noqa: E402
from ultra_prune.pruning import prune_model  # noqa: E402
from ultra_prune.pruning.cost import LatencyModel  # noqa: E402
from ultra_prune.pruning.importance import LayerRelative, Magnitude  # noqa: E402

MODELS = ("yolov8n.yaml", "yolo11n.yaml", "yolov8n-seg.yaml", "yolov8n-cls.yaml")
IMGSZ = 64


class SyntheticTimes:
    """A fixed latency table: a conv's time grows with its MACs, with a step every 16 output channels."""

    @staticmethod
    def ms(shape, cin: int, cout: int, full) -> float:
        k = shape.kernel[0] * shape.kernel[1]
        area = shape.height * shape.width / (shape.stride[0] * shape.stride[1])
        groups = shape.groups or cin
        return 1e-6 * k * area * cin * cout / groups + 1e-3 * -(-cout // 16)


def synthetic_latency(model, imgsz):
    return LatencyModel(model, imgsz, SyntheticTimes())


def fingerprint(model) -> dict:
    """Every tensor's shape and a hash of its bytes."""
    out = {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        out[name] = [list(t.shape), hashlib.sha1(t.numpy().tobytes()).hexdigest()[:16]]
    return out


def core_cases():
    for budget in ("channels", "flops"):
        for ratio in (0.3, 0.5, 0.7):
            for imp in (Magnitude, LayerRelative):
                yield f"{budget}-{ratio}-{imp.__name__}", dict(ratio=ratio, prune_by=budget, importance=imp())
    yield "flops-0.7-depth", dict(ratio=0.7, prune_by="flops", importance=Magnitude(), depth=True)
    for ratio in (0.3, 0.6):
        yield f"latency-{ratio}", dict(ratio=ratio, prune_by="latency", importance=Magnitude(),
                                       latency=synthetic_latency, depth=True)
    yield "round16-floor4", dict(ratio=0.5, round_to=16, floor=4, importance=Magnitude())


def target_choice(model) -> dict:
    """The channels a sparse-target run chooses (by |gamma| relative to its layer, before any score)."""
    try:
        from ultra_prune.slimming.target import SparsityTarget
    except ImportError:
        from ultra_prune.target import SparsityTarget
    target = SparsityTarget(0.5, "flops", 8, 8, IMGSZ)
    target.choose(model)
    return {k: v.tolist() for k, v in sorted(target.chosen.items())}


def main(out: str, before: str | None = None) -> int:
    result = {}
    for yaml in MODELS:
        model = build(yaml, seed=1)
        for name, kw in core_cases():
            pruned, _ = prune_model(model, imgsz=IMGSZ, **kw)
            result[f"{yaml} core {name}"] = fingerprint(pruned)
        for by in ("channels", "flops"):
            pruned, report = ultra_prune.prune(model, prune=0.4, prune_by=by, prune_importance="relative",
                                               imgsz=IMGSZ, verbose=False)
            result[f"{yaml} command {by}"] = fingerprint(pruned)
        if not yaml.endswith("-cls.yaml"):
            result[f"{yaml} target"] = target_choice(model)
    Path(out).write_text(json.dumps(result, indent=0, sort_keys=True))
    print(f"{len(result)} cases written to {out}")
    if before is None:
        return 0
    old = json.loads(Path(before).read_text())
    differ = sorted(k for k in old.keys() | result.keys() if old.get(k) != result.get(k))
    print("identical" if not differ else f"{len(differ)} cases differ: {differ}")
    return 1 if differ else 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(*sys.argv[1:]))

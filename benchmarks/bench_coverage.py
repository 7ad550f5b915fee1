"""Block coverage of the pruner: how much of every shipped model the dependency analysis can prune.

    python benchmarks/bench_coverage.py                 # every supported yaml x every scale it defines
    python benchmarks/bench_coverage.py --scales n      # the smallest scale of each only (fast)
    python benchmarks/bench_coverage.py --check 0.9     # exit 1 if any supported yaml is below 90 %

Walks the installed ultralytics' ``cfg/models``, builds each detect, segment, pose, obb and classify yaml at every
scale letter it defines (its task's model class, ``verbose=False``, from yaml: no downloads, no training) and runs
the pruner's dependency
analysis (``ultra_prune.pruning.analyse``). The *prunable share* of a model is the channels ``prune`` may choose
from (the summed sizes of the prunable channel spaces) over the model's BatchNorm channels. A residual group
counts once however many BatchNorms share it, so a model full of residual adds stays under 100 % even when
everything is prunable; the next column counts every BatchNorm of a prunable group instead (100 %: nothing was
left intact). The table gives both as min-max over the scales, and what the analysis left intact
(``graph.intact``). Yamls of other tasks (semantic, depth) and other model kinds (YOLOE, World, RT-DETR) are
listed at the end as not supported.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402
from torch import nn  # noqa: E402

# the pruner covers detect, segment, pose, obb and classify; these name parts mark other tasks and model kinds
OTHER_TASKS = ("-sem", "-depth")
OTHER_KINDS = ("yoloe", "world", "rtdetr")
SIZE_ORDER = "tnsmcblex"  # yolov9 t/s/m/c/e, yolov10 n/s/m/b/l/x, ..., smallest first


def models_dir() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).parent / "cfg" / "models"


def not_covered(stem: str) -> str | None:
    """Why the yaml ``stem`` is out of scope (None: a yaml the pruner should cover)."""
    if any(part in stem for part in OTHER_TASKS):
        return "task not supported (semantic / depth)"
    if any(part in stem for part in OTHER_KINDS):
        return "model kind not supported (YOLOE / World / RT-DETR)"
    return None


def scaled_names(path: Path) -> list[str]:
    """The model names to build from ``path``: one per scale letter the yaml defines (``yolov8-ghost.yaml`` ->
    ``yolov8n-ghost.yaml``, ...), or the file itself when it has no scales or its name carries one."""
    import yaml

    scales = (yaml.safe_load(path.read_text()) or {}).get("scales") or {}
    stem = path.stem
    if not scales or size_letter(stem):
        return [path.name]
    return [re.sub(r"^(yolo(?:e-)?v?\d+)", rf"\g<1>{s}", stem) + path.suffix for s in scales]


def size_letter(name: str) -> str:
    """The size letter right after the version number (``yolov9c.yaml`` -> c, ``yolov8n-p2.yaml`` -> n), or ''."""
    m = re.match(r"yolo(?:e-)?v?\d+([a-z])?(?:-|$)", Path(name).stem)
    return (m.group(1) or "") if m else ""


def family_of(stem: str) -> str:
    """Files of one family at different sizes share a row: yolov10n/s/.../x -> yolov10, yolov9t/.../e -> yolov9."""
    return re.sub(r"^(yolo(?:e-)?v?\d+)[a-z](?=-|$)", r"\1", stem)


def yamls(scales: str | None = None) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``({family: [model names, smallest first]}, {yaml stem: why skipped})`` for every yaml the installed
    ultralytics ships. ``scales``: only these size letters (a family without any of them: its smallest model)."""
    detect, skipped = {}, {}
    for path in sorted(models_dir().rglob("*.yaml")):
        why = not_covered(path.stem) or ("a torchvision backbone (its weights are downloaded when built)"
                                         if "TorchVision" in path.read_text() else None)
        if why:
            skipped[path.stem] = why
            continue
        detect.setdefault(family_of(path.stem), []).extend(scaled_names(path))
    for family, names in detect.items():
        names.sort(key=lambda n: (SIZE_ORDER.find(size_letter(n)), n))
        if scales:
            detect[family] = [n for n in names if size_letter(n) and size_letter(n) in scales] or names[:1]
    return detect, skipped


def build(name: str) -> nn.Module:
    """The model of ``name`` (its task's model class); a size letter ultralytics does not guess (yolov10b) is
    passed as the scale."""
    from ultralytics.nn import tasks

    cfg = tasks.yaml_model_load(name)
    model_class = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel",
                   "obb": "OBBModel", "classify": "ClassificationModel"}[tasks.guess_model_task(cfg)]
    letter = size_letter(name)
    if not cfg.get("scale") and letter in (cfg.get("scales") or {}):
        cfg["scale"] = letter
    from ultralytics.utils import LOGGER

    torch.manual_seed(0)
    level = LOGGER.level
    LOGGER.setLevel("WARNING")  # ClassificationModel logs its summary even with verbose=False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return getattr(tasks, model_class)(cfg, verbose=False).eval()
    finally:
        LOGGER.setLevel(level)


def coverage(model: nn.Module) -> dict:
    """The prunable share of ``model`` and what it is made of: ``share`` (prunable channels / BatchNorm channels),
    ``bn_share`` (BatchNorm channels that belong to a prunable group / all of them: each BN of a residual group or
    depthwise conv counted), ``prunable``, ``bn``, ``intact`` (modules or parts left intact)."""
    from ultra_prune.pruning import analyse

    graph = analyse(model)
    roots = [s for s in graph.roots() if s.prunable]
    prunable = sum(s.size for s in roots)
    in_groups = sum(s.size * len(s.producers + s.depthwise) for s in roots)
    bn = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return {"share": prunable / bn, "bn_share": in_groups / bn, "prunable": prunable, "bn": bn,
            "intact": list(graph.intact)}


def summarise_intact(intact: list[str]) -> str:
    """``A (why) x3, B (why)`` from a list of intact module descriptions."""
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in Counter(intact).items()) or "-"


def measure(scales: str | None = None, families: list[str] | None = None, log=print) -> dict[str, dict]:
    """``{family: {"models": {name: coverage dict}, "min"/"max": share, "bn_min"/"bn_max": bn_share,
    "intact": [..]}}``."""
    import ultra_prune

    ultra_prune.apply()  # the patches and the plugins' channel rules
    detect, _ = yamls(scales)
    out = {}
    for family, names in detect.items():
        if families and family not in families:
            continue
        models, intact = {}, []
        for name in names:
            t = time.perf_counter()
            c = models[name] = coverage(build(name))
            intact += [x for x in c["intact"] if x not in intact]
            log(f"  {name:24s} {c['share']:6.1%} ({c['prunable']}/{c['bn']} BN channels)  in prunable groups "
                f"{c['bn_share']:6.1%}  {time.perf_counter() - t:.1f}s")
        shares, bn_shares = [c["share"] for c in models.values()], [c["bn_share"] for c in models.values()]
        out[family] = {"models": models, "min": min(shares), "max": max(shares), "bn_min": min(bn_shares),
                       "bn_max": max(bn_shares), "intact": intact}
    return out


def _span(lo: float, hi: float) -> str:
    return f"{lo:.0%}" if round(lo * 100) == round(hi * 100) else f"{lo:.0%}-{hi:.0%}"


def table(result: dict[str, dict], skipped: dict[str, str]) -> str:
    rows = ["| yaml family (models) | prunable share | BN channels in prunable groups | left intact |",
            "|---|---|---|---|"]
    for family, r in result.items():
        rows.append(f"| {family} ({len(r['models'])}) | {_span(r['min'], r['max'])} | "
                    f"{_span(r['bn_min'], r['bn_max'])} | {summarise_intact(r['intact'])} |")
    for stem, why in skipped.items():
        rows.append(f"| {stem} | - | - | {why} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default=None, help="scale letters to build, e.g. 'n' or 'ns' (default: all)")
    ap.add_argument("--family", action="append", default=None, help="only this yaml family (repeatable)")
    ap.add_argument("--check", type=float, default=None, metavar="FLOOR",
                    help="exit 1 if any covered yaml's prunable share is below FLOOR (a fraction, e.g. 0.9)")
    ap.add_argument("--check-bn", type=float, default=None, metavar="FLOOR",
                    help="exit 1 if any covered yaml has less than FLOOR of its BatchNorm channels in prunable groups")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # small forward passes only; one thread avoids OpenMP stalls on a busy machine
    import ultralytics

    print(f"ultralytics {ultralytics.__version__}, torch {torch.__version__}", file=sys.stderr)
    result = measure(args.scales, args.family, log=lambda s: print(s, file=sys.stderr))
    _, skipped = yamls(args.scales)
    print(table(result, {} if args.family else skipped))
    below = False
    for key, floor, what in (("min", args.check, "prunable share"),
                             ("bn_min", args.check_bn, "BN channels in prunable groups")):
        for f, r in result.items() if floor is not None else ():
            if r[key] < floor:
                below = True
                print(f"{f}: {what} {r[key]:.1%} < {floor:.0%}", file=sys.stderr)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 11 benchmark: does ``sparsity_target=`` reach its target with the user's own optimizer, at little cost?

Trains one base yolov8n on the built-in dataset, then for every optimizer x epochs x target trains it on with
``sparsity_target`` (every other argument at ultralytics' defaults: lr0, nbs, warmup, ...), and for every
optimizer x epochs once more with no sparsity at all (the plain row). Prints per row: the share reached (as the
pruner counts it), mAP50-95 of the plain row, after sparse training, and right after ``yolo prune`` at the
recorded target (no ``prune=``, no fine-tuning). Not a test: about 45 minutes on a 2-core CPU with the defaults.

    python benchmarks/bench_target.py [--epochs 5 20] [--targets 0.3 0.5 0.7] [--optimizers auto SGD AdamW]
                                      [--base-epochs 20] [--prune-by channels] [--out runs/bench_target] [--reuse]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from common import checkpoint_model, dataset, map50_95, train

from ultra_prune.commands.prune import prune
from ultra_prune.slimming.target import SparsityTarget


def reached(weights, target, prune_by, imgsz=128) -> float:
    """The share of prunable channels (or GFLOPs) the zeroed channels of ``weights`` amount to."""
    return SparsityTarget(target, prune_by, imgsz=imgsz).reached(checkpoint_model(weights))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--optimizers", nargs="+", default=["auto", "SGD", "AdamW"])
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--prune-by", default="channels", choices=["channels", "flops"])
    ap.add_argument("--out", default="runs/bench_target")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose last.pt already exists in --out")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    data = dataset(out / "data")

    def run(model, name, **kw):
        last = out / name / "weights" / "last.pt"
        return last if a.reuse and last.exists() else train(model, data, out, name, **kw)

    base = run("yolov8n.yaml", "base", epochs=a.base_epochs, optimizer="SGD")
    rows = []
    for opt, epochs in itertools.product(a.optimizers, a.epochs):
        t = time.time()
        plain = map50_95(run(base, f"plain_{opt}_{epochs}", epochs=epochs, optimizer=opt), data)
        print(json.dumps({"optimizer": opt, "epochs": epochs, "plain": plain, "seconds": time.time() - t}), flush=True)
        for target in a.targets:
            t = time.time()
            name = f"target_{opt}_{epochs}_{target:g}_{a.prune_by}"
            last = run(base, name, epochs=epochs, optimizer=opt, sparsity_target=target, prune_by=a.prune_by)
            pruned = out / f"{name}_pruned.pt"
            prune(last, prune_out=pruned, exist_ok=True, imgsz=128, verbose=False)  # the recorded target
            row = {"optimizer": opt, "epochs": epochs, "target": target, "prune_by": a.prune_by,
                   "reached": reached(last, target, a.prune_by), "plain": plain, "sparse": map50_95(last, data),
                   "pruned": map50_95(pruned, data), "seconds": time.time() - t}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nyolov8n, built-in dataset (256 train / 64 val, 128 px), one {a.base_epochs}-epoch SGD base; every row "
          f"trains it on with ultralytics' defaults (lr0, nbs=64, warmup) and the optimizer named; prune_by={a.prune_by}; "
          "'pruned' is right after `prune` at the recorded target, no fine-tuning\n")
    print("| optimizer | epochs | target | reached | mAP50-95 plain | sparse | pruned | sparse − plain | pruned − sparse |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optimizer']} | {r['epochs']} | {r['target']:g} | {r['reached']:.1%} | {r['plain']:.3f} | "
              f"{r['sparse']:.3f} | {r['pruned']:.3f} | {100 * (r['sparse'] - r['plain']):+.1f} pt | "
              f"{100 * (r['pruned'] - r['sparse']):+.1f} pt |")


if __name__ == "__main__":
    main()

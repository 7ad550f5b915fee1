"""Issue 7 benchmark: does sparse training make gamma sparse, per mode x optimizer x lambda?

Trains a base yolov8n on the built-in dataset once, then for every row sparse-trains it for the same epochs and
prints: fraction of |gamma| < 1e-2 and < 1e-3, mAP50-95 after sparse training, and mAP50-95 right after prune=0.5
(no fine-tuning). Not a test: it takes ~1-2 min per row on a 2-core CPU.

    python benchmarks/bench_sparsity.py [--epochs 8] [--base-epochs 12] [--lams 0.05 0.5] [--out runs/bench_sparsity]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from common import dataset, map50_95, sparsity_of, train

from ultra_prune.commands.prune import prune


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8, help="sparse-training epochs of every row")
    ap.add_argument("--base-epochs", type=int, default=12)
    ap.add_argument("--lams", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--modes", nargs="+", default=["prox", "polar", "grad"])
    ap.add_argument("--optimizers", nargs="+", default=["SGD", "AdamW", "auto"])
    ap.add_argument("--out", default="runs/bench_sparsity")
    ap.add_argument("--reuse", action="store_true", help="keep rows whose last.pt already exists in --out")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    data = dataset(out / "data")
    base = out / "base" / "weights" / "last.pt"
    if not base.exists():
        train("yolov8n.yaml", data, out, "base", epochs=a.base_epochs, optimizer="SGD", lr0=0.01, nbs=16)
    base_stats, base_map = sparsity_of(base), map50_95(base, data)
    rows = [{"mode": "-", "optimizer": "base", "lam": 0.0, **base_stats, "map": base_map}]
    for mode, opt, lam in itertools.product(a.modes, a.optimizers, a.lams):
        name = f"{mode}_{opt}_{lam:g}"
        t = time.time()
        last = out / name / "weights" / "last.pt"
        if not (a.reuse and last.exists()):
            last = train(base, data, out, name, epochs=a.epochs, optimizer=opt, lr0=0.01, nbs=16, sparsity=lam,
                         sparsity_mode=mode, warmup_epochs=1)
        pruned_pt = out / f"{name}_pruned.pt"
        prune(last, prune=0.5, prune_out=pruned_pt, exist_ok=True, imgsz=128, verbose=False)
        row = {"mode": mode, "optimizer": opt, "lam": lam, **sparsity_of(last), "map": map50_95(last, data),
               "map_pruned": map50_95(pruned_pt, data), "seconds": time.time() - t}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\nyolov8n, built-in dataset (256 train / 64 val, 128 px), {a.epochs} sparse epochs from a "
          f"{a.base_epochs}-epoch base, batch 16, lr0 0.01, prune=0.5 without fine-tuning\n")
    print("| mode | optimizer | λ | |γ|<1e-2 | |γ|<1e-3 | mAP50-95 sparse | mAP50-95 pruned 0.5 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pruned = f"{r['map_pruned']:.3f}" if "map_pruned" in r else "-"
        print(f"| {r['mode']} | {r['optimizer']} | {r['lam']:g} | {r['sparsity/gamma<0.01']:.1%} | "
              f"{r['sparsity/gamma<0.001']:.1%} | {r['map']:.3f} | {pruned} |")


if __name__ == "__main__":
    main()

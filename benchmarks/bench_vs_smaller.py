"""Issue 5 benchmark: slim a larger model down to a smaller model's FLOPs, against the smaller model from scratch.

Both arms get the same total epochs on the built-in dataset:
  slimmed : --large base (E/2) -> polar sparse training (E/4) -> prune to the --small model's GFLOPs -> fine-tune (E/4)
  scratch : --small trained for E epochs
Prints mAP50-95, GFLOPs and params of each arm. Not a test (~15 min on a 2-core CPU with the defaults).

    python benchmarks/bench_vs_smaller.py [--large yolov8s.yaml] [--small yolov8n.yaml] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import checkpoint_model, dataset, map50_95, train

from ultra_prune.api import prune
from ultra_prune.pruning import prune_model
from ultra_prune.report import count_params, gflops

IMGSZ = 128


def ratio_for_gflops(model, target: float) -> float:
    """The prune ratio whose pruned model has the GFLOPs closest to ``target`` (bisection; pruning is monotone)."""
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if gflops(prune_model(model, mid)[0], IMGSZ) > target:
            lo = mid
        else:
            hi = mid
    return hi


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", default="yolov8s.yaml")
    ap.add_argument("--small", default="yolov8n.yaml")
    ap.add_argument("--epochs", type=int, default=20, help="total epochs of each arm")
    ap.add_argument("--sparsity", type=float, default=2.0)
    ap.add_argument("--out", default="runs/bench_vs_smaller")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    data = dataset(out / "data")
    e_base, e_sparse = a.epochs // 2, a.epochs // 4
    e_ft = a.epochs - e_base - e_sparse
    sgd = dict(optimizer="SGD", lr0=0.01, nbs=16)

    scratch = train(a.small, data, out, "scratch", epochs=a.epochs, **sgd)
    base = train(a.large, data, out, "large_base", epochs=e_base, **sgd)
    sparse = train(base, data, out, "large_sparse", epochs=e_sparse, optimizer="AdamW", lr0=0.01, nbs=16,
                   warmup_epochs=1, sparsity=a.sparsity, sparsity_mode="polar")
    target = gflops(checkpoint_model(scratch), IMGSZ)
    ratio = ratio_for_gflops(checkpoint_model(sparse), target)
    pruned_pt = out / "large_pruned.pt"
    prune(sparse, prune=ratio, prune_out=pruned_pt, exist_ok=True, imgsz=IMGSZ, verbose=False)
    slimmed = train(pruned_pt, data, out, "large_finetune", epochs=e_ft, **sgd)

    rows = {}
    for name, w in (("scratch " + a.small, scratch), ("slimmed " + a.large, slimmed),
                    (a.large + " base", base), (a.large + " pruned, before fine-tune", pruned_pt)):
        m = checkpoint_model(w)
        rows[name] = {"map50_95": map50_95(w, data), "gflops": gflops(m, IMGSZ), "params": count_params(m)}
    (out / "results.json").write_text(json.dumps({"rows": rows, "prune": ratio}, indent=2))
    print(f"\nbuilt-in dataset, {IMGSZ} px, {a.epochs} total epochs per arm "
          f"({a.large}: {e_base} base + {e_sparse} sparse (polar, λ={a.sparsity}) + prune={ratio:.3f} + {e_ft} fine-tune)\n")
    print("| model | mAP50-95 | GFLOPs | params |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['map50_95']:.3f} | {r['gflops']:.3f} | {r['params']:,} |")


if __name__ == "__main__":
    main()

"""Slim a larger model down to a smaller model's FLOPs, against the smaller model from scratch (issues 5 and 12).

Both arms get the same total epochs and optimizer on the built-in data (the harder set by default, where the
larger model is clearly more accurate):
  slimmed : --large base (E/2) -> sparse training with sparsity_target = 1 - small/large GFLOPs, prune_by=flops
            (E/4) -> `prune` at the recorded target -> fine-tune (E/4)
  + distill: the same with distill_model=<--large trained for E epochs> (logit distillation) in sparse training and
            fine-tuning
  scratch : --small trained for E epochs
Prints mAP50-95, GFLOPs, params and the onnxruntime CPU latency (batch 1) of each. Not a test (~30 min on a
2-core CPU with the defaults).

    python benchmarks/bench_vs_smaller.py [--data hard|easy] [--large yolov8s.yaml] [--small yolov8n.yaml]
                                          [--epochs 40] [--optimizer SGD]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import common
from common import checkpoint_model, dataset, hard_dataset, map50_95, train

from ultra_prune.commands.prune import prune
from ultra_prune.engine.report import count_params, gflops

IMGSZ = 128


def onnx_ms(weights: list) -> list[float]:
    """Median onnxruntime CPU latency of one image for each checkpoint, exported in a temporary folder and timed
    interleaved in one process."""
    import shutil

    from ultralytics import YOLO

    from ultra_prune.commands.demo import onnx_latencies_ms

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, w in enumerate(weights):
            local = Path(tmp) / f"m{i}.pt"
            shutil.copyfile(w, local)
            paths.append(YOLO(str(local)).export(format="onnx", imgsz=IMGSZ, simplify=False, verbose=False))
        return onnx_latencies_ms(paths, IMGSZ)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["hard", "easy"], default="hard")
    ap.add_argument("--large", default="yolov8s.yaml")
    ap.add_argument("--small", default="yolov8n.yaml")
    ap.add_argument("--epochs", type=int, default=40, help="total epochs of each arm")
    ap.add_argument("--optimizer", default="SGD")
    ap.add_argument("--out", default="runs/bench_vs_smaller")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose last.pt already exists in --out")
    a = ap.parse_args()
    common.REUSE = a.reuse
    out = Path(a.out).resolve()
    data = (hard_dataset if a.data == "hard" else dataset)(out / "data")
    e_base, e_sparse = a.epochs // 2, a.epochs // 4
    e_ft = a.epochs - e_base - e_sparse
    kw = dict(optimizer=a.optimizer, imgsz=IMGSZ)

    scratch = train(a.small, data, out, "scratch", epochs=a.epochs, **kw)
    large = train(a.large, data, out, "large", epochs=a.epochs, **kw)  # the larger model with every epoch, for scale
    base = train(a.large, data, out, "large_base", epochs=e_base, **kw)
    cut = 1 - gflops(checkpoint_model(scratch), IMGSZ) / gflops(checkpoint_model(base), IMGSZ)
    sparse = train(base, data, out, "large_sparse", epochs=e_sparse, sparsity_target=round(cut, 4), prune_by="flops",
                   **kw)
    pruned_pt = out / "large_pruned.pt"
    prune(sparse, prune_out=pruned_pt, exist_ok=True, imgsz=IMGSZ, verbose=False)
    slimmed = train(pruned_pt, data, out, "large_finetune", epochs=e_ft, **kw)
    sparse_d = train(base, data, out, "large_sparse_distill", epochs=e_sparse, sparsity_target=round(cut, 4),
                     prune_by="flops", distill_model=str(large), **kw)
    pruned_d = out / "large_pruned_distill.pt"
    prune(sparse_d, prune_out=pruned_d, exist_ok=True, imgsz=IMGSZ, verbose=False)
    distilled = train(pruned_d, data, out, "large_distill_ft", epochs=e_ft, distill_model=str(large), **kw)

    rows = {}
    arms = ((f"scratch {a.small}", scratch), (f"slimmed {a.large}", slimmed), (f"slimmed {a.large} + distill", distilled),
            (f"{a.large}, {a.epochs} epochs", large), (f"{a.large} pruned, before fine-tune", pruned_pt))
    for (name, w), ms in zip(arms, onnx_ms([w for _, w in arms])):
        m = checkpoint_model(w)
        rows[name] = {"map50_95": map50_95(w, data), "gflops": gflops(m, IMGSZ), "params": count_params(m), "onnx_ms": ms}
    (out / "results.json").write_text(json.dumps({"rows": rows, "cut": cut}, indent=2))
    print(f"\n{a.data} built-in dataset, {IMGSZ} px, {a.epochs} total epochs per arm, optimizer={a.optimizer} "
          f"({a.large}: {e_base} base + {e_sparse} sparse (sparsity_target={cut:.3f} prune_by=flops) + prune + "
          f"{e_ft} fine-tune)\n")
    print("| model | mAP50-95 | GFLOPs | params | ORT CPU ms |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['map50_95']:.3f} | {r['gflops']:.3f} | {r['params']:,} | {r['onnx_ms']:.2f} |")


if __name__ == "__main__":
    main()

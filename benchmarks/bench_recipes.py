"""Which recipe to run: every arm starts from one base checkpoint and gets the same epochs after it, at the same
GFLOPs cut (at the training imgsz, as ultralytics counts), with the same optimizer:

  full width      : the base trained on, unpruned (the reference, and the teacher of the distilled arms)
  Torch-Pruning   : its YOLOv8 recipe (``tp_recipe.py``): E/2 group-L2 sparse epochs, progressive pruning, E/2 fine-tuning
  four-step       : E/2 epochs ``sparsity_target=<cut> prune_by=flops``, ``yolo prune`` at the recorded target, E/2
                    fine-tuning (the classic network-slimming path)
  one-shot        : one command, ``yolo train model=base.pt epochs=E prune=<cut> prune_by=flops`` (Taylor scores from
                    32 batches, prune, then E epochs of fine-tuning)
  one run         : one command, ``yolo train model=base.pt epochs=E sparsity_target=<cut> prune_by=flops
                    prune_at_zero=True`` (the chosen channels reach zero at 40 % of the run and are removed then; the
                    same run trains the smaller model on, one learning-rate schedule)
  ... + teacher   : the same with ``distill_model=<full width>`` (logit distillation) in every training stage

Prints mAP50-95 after the last epoch of each arm, one table. Needs the benchmark-only extra ``pip install
torch-pruning`` for the Torch-Pruning arm (skipped without it). Not a test: about an hour on a 2-core CPU.

    python benchmarks/bench_recipes.py [--data hard|easy] [--cuts 0.5 0.7 0.3] [--base-epochs 20] [--epochs 20]
                                       [--optimizer SGD] [--arms NAME ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import common
from bench_vs_torch_pruning import IMGSZ, ultra_arm, ultra_distill_arm, unpruned
from common import checkpoint_model, hard_dataset, map50_95, train

from ultra_prune.report import gflops


def one_shot(base, data, out, cut, a, kw, teacher=None):
    """``train(prune=cut, prune_by=flops)`` for all E epochs: the one-command recipe."""
    extra = {"distill_model": str(teacher)} if teacher else {}
    name = f"oneshot{'_teacher' if teacher else ''}_{cut:g}"
    return train(base, data, out, name, epochs=2 * a.sparse_epochs, prune=cut, prune_by="flops", **extra, **kw)


def one_run(base, data, out, cut, a, kw, teacher=None):
    """``train(sparsity_target=cut, prune_by=flops, prune_at_zero=True)`` for all E epochs."""
    extra = {"distill_model": str(teacher)} if teacher else {}
    name = f"onerun{'_teacher' if teacher else ''}_{cut:g}"
    return train(base, data, out, name, epochs=2 * a.sparse_epochs, sparsity_target=cut, prune_by="flops",
                 prune_at_zero=True, **extra, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["hard", "easy"], default="hard")
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.5, 0.7, 0.3])
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of every arm after the base (even)")
    ap.add_argument("--optimizer", default="SGD")
    ap.add_argument("--arms", nargs="+", help="only these arms (names as in the table), e.g. 'one-shot' 'one run'")
    ap.add_argument("--out", default="runs/bench_recipes")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose last.pt already exists in --out")
    a = ap.parse_args()
    a.sparse_epochs = a.finetune_epochs = a.epochs // 2
    out = Path(a.out).resolve()
    common.REUSE = a.reuse
    data = hard_dataset(out / "data") if a.data == "hard" else common.dataset(out / "data")
    kw = dict(optimizer=a.optimizer, imgsz=IMGSZ)
    base = train("yolov8n.yaml", data, out, "base", epochs=a.base_epochs, **kw)
    full = unpruned(base, data, out, a, kw)
    g0 = gflops(checkpoint_model(base), IMGSZ)
    head = {"base": map50_95(base, data), "full width": map50_95(full, data)}
    print(json.dumps(head), flush=True)
    have_tp = importlib.util.find_spec("torch_pruning") is not None
    rows = []
    for cut in a.cuts:
        arms = {"four-step": lambda: ultra_arm(base, data, out, cut, a, kw)[1],
                "four-step + teacher": lambda: ultra_distill_arm(base, data, out, cut, a, kw)[1],
                "one-shot": lambda: one_shot(base, data, out, cut, a, kw),
                "one-shot + teacher": lambda: one_shot(base, data, out, cut, a, kw, teacher=full),
                "one run": lambda: one_run(base, data, out, cut, a, kw),
                "one run + teacher": lambda: one_run(base, data, out, cut, a, kw, teacher=full)}
        if have_tp:
            from bench_vs_torch_pruning import tp_arm

            arms = {"Torch-Pruning": lambda: tp_arm(base, data, out, cut, a, kw)[1], **arms}
        for name, arm in arms.items():
            if a.arms and name not in a.arms:
                continue
            weights = arm()
            row = {"cut": cut, "arm": name, "gflops_cut": 1 - gflops(checkpoint_model(weights), IMGSZ) / g0,
                   "map": map50_95(weights, data)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps({**head, "rows": rows}, indent=2))
    names = list(dict.fromkeys(r["arm"] for r in rows))
    print(f"\n{a.data} built-in data, {IMGSZ} px, yolov8n base of {a.base_epochs} epochs (mAP50-95 {head['base']:.3f}); "
          f"every arm {a.epochs} epochs after it, optimizer={a.optimizer}; full width for as long: "
          f"{head['full width']:.3f}\n")
    print("| GFLOPs cut | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for cut in a.cuts:
        got = {r["arm"]: r for r in rows if r["cut"] == cut}
        print(f"| −{cut:.0%} | " + " | ".join(f"{got[n]['map']:.3f}" if n in got else "-" for n in names) + " |")


if __name__ == "__main__":
    main()

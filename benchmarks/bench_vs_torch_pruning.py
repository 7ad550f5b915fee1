"""Issue 12 benchmark: ultra-prune against Torch-Pruning's YOLOv8 recipe at the same GFLOPs, from one base checkpoint.

Both arms start from the same base yolov8n, get the same sparse-training and fine-tuning epochs with the same
optimizer, and are cut to -30 %, -50 % and -70 % GFLOPs (at the training imgsz, as ultralytics counts):

  torch-pruning : C2f split in two convs, sparse training with GroupNormPruner.regularize, group-L2 importance,
                  the same ratio in every layer, Detect ignored, progressive steps to the GFLOPs target, fine-tune
  ultra-prune   : sparse training with sparsity_target=<cut> prune_by=flops, `prune` at the recorded target, fine-tune
  + distill     : the same recipe with distill_model=<unpruned> (logit distillation) in sparse training and
                  fine-tuning, where <unpruned> is the base trained on, unpruned, for the same sparse + fine-tuning
                  epochs
  + feature     : ultra-prune's plain pruned model, fine-tuned with ultralytics' own feature distillation from
                  <unpruned> (distill_loss=feature, its default dis=6.0; only where the installed ultralytics ships
                  it, 8.4.80 and later)

Prints GFLOPs, params and mAP50-95 right after pruning and after fine-tuning, and draws ``vs_torch_pruning.png``
(mAP50-95 after fine-tuning against the GFLOPs removed). Needs the benchmark-only extra
``pip install torch-pruning``. Not a test: about 40 minutes on a 2-core CPU with the defaults.

    python benchmarks/bench_vs_torch_pruning.py [--data hard|easy] [--cuts 0.3 0.5 0.7] [--base-epochs 30]
                                                [--sparse-epochs 10] [--finetune-epochs 10] [--optimizer SGD]
"""

from __future__ import annotations

import json

from common import budget_parser, budget_setup, checkpoint_model, map50_95, train
from tp_recipe import TPSparseTrainer, prune_progressively, split_c2f

from ultra_prune.commands.prune import prune
from ultra_prune.config.keys import native_distillation
from ultra_prune.io.checkpoint import load_model, save_model
from ultra_prune.pruning import MARKER
from ultra_prune.engine.report import count_params, gflops

IMGSZ = 128


def tp_arm(base, data, out, cut, a, kw):
    """Torch-Pruning's recipe; returns (pruned checkpoint, fine-tuned checkpoint)."""
    model, ckpt = load_model(base)
    split = out / "tp_split.pt"
    if not split.exists():
        split_c2f(model)
        setattr(model, MARKER, {"history": []})  # ultra-prune's trainer then keeps this architecture as it is
        save_model(model, split, ckpt, exist_ok=True)
    sparse = out / "tp_sparse" / "weights" / "last.pt"  # one regularised run serves every cut
    if not sparse.exists():
        from ultralytics import YOLO

        YOLO(str(split)).train(trainer=TPSparseTrainer, data=str(data), epochs=a.sparse_epochs, project=str(out),
                               name="tp_sparse", **kw)
    model, ckpt = load_model(sparse)
    target = (1 - cut) * gflops(model, IMGSZ)
    prune_progressively(model, target, IMGSZ, gflops)
    setattr(model, MARKER, {"history": [{"tp": cut}]})
    pruned = out / f"tp_{cut:g}_pruned.pt"
    save_model(model, pruned, ckpt, exist_ok=True)
    return pruned, train(pruned, data, out, f"tp_{cut:g}_finetune", epochs=a.finetune_epochs, **kw)


def ultra_pruned(base, data, out, cut, a, kw):
    """ultra-prune's sparse training to the GFLOPs cut, then `prune` at the recorded target."""
    pruned = out / f"up_{cut:g}_pruned.pt"
    if not pruned.exists():
        sparse = train(base, data, out, f"up_{cut:g}_sparse", epochs=a.sparse_epochs, sparsity_target=cut,
                       prune_by="flops", **kw)
        prune(sparse, prune_out=pruned, imgsz=IMGSZ, verbose=False)
    return pruned


def ultra_arm(base, data, out, cut, a, kw):
    """ultra-prune's recipe; returns (pruned checkpoint, fine-tuned checkpoint)."""
    pruned = ultra_pruned(base, data, out, cut, a, kw)
    return pruned, train(pruned, data, out, f"up_{cut:g}_finetune", epochs=a.finetune_epochs, **kw)


def unpruned(base, data, out, a, kw):
    """The base trained on, unpruned, for as many epochs as the arms get: the reference and the teacher."""
    return train(base, data, out, "unpruned", epochs=a.sparse_epochs + a.finetune_epochs, **kw)


def ultra_distill_arm(base, data, out, cut, a, kw):
    """ultra-prune's recipe with the unpruned model as the teacher (logit distillation) in sparse training and
    fine-tuning alike."""
    teacher = str(unpruned(base, data, out, a, kw))
    pruned = out / f"upd_{cut:g}_pruned.pt"
    if not pruned.exists():
        sparse = train(base, data, out, f"upd_{cut:g}_sparse", epochs=a.sparse_epochs, sparsity_target=cut,
                       prune_by="flops", distill_model=teacher, **kw)
        prune(sparse, prune_out=pruned, imgsz=IMGSZ, verbose=False)
    return pruned, train(pruned, data, out, f"upd_{cut:g}_distill", epochs=a.finetune_epochs, distill_model=teacher,
                         **kw)


def feature_distill_arm(base, data, out, cut, a, kw):
    """ultra-prune's plain pruned model, fine-tuned with ultralytics' own feature distillation from the teacher."""
    pruned = ultra_pruned(base, data, out, cut, a, kw)
    return pruned, train(pruned, data, out, f"up_{cut:g}_distill_feature", epochs=a.finetune_epochs,
                         distill_loss="feature", distill_model=str(unpruned(base, data, out, a, kw)), **kw)


def plot(base_row: dict, rows: list[dict], path, a) -> None:
    """mAP50-95 after fine-tuning against the share of GFLOPs removed, one line per method, beside the base trained
    on unpruned for as long."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = sorted((r for r in rows if r["method"] == method), key=lambda r: r["gflops"], reverse=True)
        ax.plot([100 * (1 - r["gflops"] / base_row["gflops"]) for r in sel], [r["map_tuned"] for r in sel], "o-",
                label=method)
    ax.axhline(base_row["map_unpruned"], color="grey", ls="--", label="unpruned, trained as long")
    ax.set_xlabel(f"GFLOPs removed, % (yolov8n at {IMGSZ} px)")
    ax.set_ylabel(f"mAP50-95 after fine-tuning ({a.data} built-in data)")
    ax.set_title(f"{a.base_epochs}-epoch base; {a.sparse_epochs} sparse + {a.finetune_epochs} fine-tuning epochs, "
                 f"{a.optimizer}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main():
    a = budget_parser(__doc__, "runs/bench_vs_torch_pruning").parse_args()
    out, data, kw, base = budget_setup(a, IMGSZ)
    base_row = {"gflops": gflops(checkpoint_model(base), IMGSZ), "map": map50_95(base, data),
                "map_unpruned": map50_95(unpruned(base, data, out, a, kw), data)}
    rows = []
    for cut in a.cuts:
        arms = [("Torch-Pruning", tp_arm), ("ultra-prune", ultra_arm), ("ultra-prune + distill", ultra_distill_arm)]
        if native_distillation():
            arms.append(("ultra-prune + ultralytics' feature distill", feature_distill_arm))
        for method, arm in arms:
            pruned, tuned = arm(base, data, out, cut, a, kw)
            m = checkpoint_model(pruned)
            row = {"cut": cut, "method": method, "gflops": gflops(m, IMGSZ), "params": count_params(m),
                   "map_pruned": map50_95(pruned, data), "map_tuned": map50_95(tuned, data)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps({"base": base_row, "rows": rows}, indent=2))
    plot(base_row, rows, out / "vs_torch_pruning.png", a)
    print(f"\n{a.data} built-in dataset, {IMGSZ} px, yolov8n base ({a.base_epochs} epochs, mAP50-95 "
          f"{base_row['map']:.3f}, {base_row['gflops']:.3f} GFLOPs); every arm: {a.sparse_epochs} sparse + "
          f"{a.finetune_epochs} fine-tuning epochs, optimizer={a.optimizer}; the base trained on unpruned for as "
          f"long: {base_row['map_unpruned']:.3f}\n")
    print("| GFLOPs cut asked | method | GFLOPs cut | params | mAP50-95 right after prune | after fine-tune |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cut']:.0%} | {r['method']} | {1 - r['gflops'] / base_row['gflops']:.1%} | {r['params']:,} | "
              f"{r['map_pruned']:.3f} | {r['map_tuned']:.3f} |")


if __name__ == "__main__":
    main()

"""Channel choice for a model that is not sparse: each ``prune_importance`` at the same GFLOPs, from one base.

One yolov8n base (trained plainly, no sparsity) is pruned straight to -30 %, -50 % and -70 % GFLOPs at the training
imgsz (``prune_by=flops``) with every importance, then fine-tuned with the same epochs and optimizer:

  l1       : BN |gamma|, the largest of each coupled group, one global ranking
  relative : |gamma| over its layer's mean
  taylor   : first-order Taylor scores |gamma*dL/dgamma + beta*dL/dbeta| from 32 batches of the training split

Prints GFLOPs, params and mAP50-95 right after pruning and after fine-tuning. Not a test: about 20 minutes on a
2-core CPU with the defaults (the base is trained once per --out and reused).

    python benchmarks/bench_importance.py [--data hard|easy] [--cuts 0.3 0.5 0.7] [--base-epochs 30]
                                          [--finetune-epochs 10] [--optimizer SGD] [--out DIR]
"""

from __future__ import annotations

import json

from common import budget_parser, budget_setup, checkpoint_model, map50_95, train

from ultra_prune.commands.prune import prune
from ultra_prune.engine.report import count_params, gflops

IMGSZ = 128
IMPORTANCES = ("l1", "relative", "taylor")


def main():
    a = budget_parser(__doc__, "runs/bench_importance", sparse=False).parse_args()
    out, data, kw, base = budget_setup(a, IMGSZ)
    base_row = {"gflops": gflops(checkpoint_model(base), IMGSZ), "map": map50_95(base, data)}
    rows = []
    for cut in a.cuts:
        for importance in IMPORTANCES:
            pruned = out / f"{importance}_{cut:g}_pruned.pt"
            prune(base, prune=cut, prune_by="flops", prune_importance=importance, imgsz=IMGSZ, prune_out=pruned,
                  exist_ok=True, verbose=False, data=str(data) if importance == "taylor" else None)
            tuned = train(pruned, data, out, f"{importance}_{cut:g}_finetune", epochs=a.finetune_epochs, **kw)
            m = checkpoint_model(pruned)
            row = {"cut": cut, "importance": importance, "gflops": gflops(m, IMGSZ), "params": count_params(m),
                   "map_pruned": map50_95(pruned, data), "map_tuned": map50_95(tuned, data)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            (out / "results.json").write_text(json.dumps({"base": base_row, "rows": rows}, indent=2))
    print(f"\n{a.data} built-in dataset, {IMGSZ} px, yolov8n base ({a.base_epochs} epochs, mAP50-95 {base_row['map']:.3f}, "
          f"{base_row['gflops']:.3f} GFLOPs), pruned with prune_by=flops, then {a.finetune_epochs} fine-tuning epochs, "
          f"optimizer={a.optimizer}\n")
    print("| GFLOPs cut asked | prune_importance | GFLOPs cut | params | mAP50-95 right after prune | after fine-tune |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cut']:.0%} | {r['importance']} | {1 - r['gflops'] / base_row['gflops']:.1%} | {r['params']:,} | "
              f"{r['map_pruned']:.3f} | {r['map_tuned']:.3f} |")


if __name__ == "__main__":
    main()

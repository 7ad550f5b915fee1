"""``prune_by=latency``: does the measured latency land on the budget, and what does aiming at latency buy?

    python benchmarks/bench_latency.py budget   [--models yolov8n.yaml ...] [--runtimes onnxruntime openvino]
                                                [--cuts 0.3 0.5 0.7] [--imgsz 320]
    python benchmarks/bench_latency.py accuracy [--base-epochs 20] [--finetune-epochs 10] [--imgsz 320]

``budget`` (no training): every model is built from yaml with seeded random BatchNorm scales, saved, and pruned the
way ``yolo prune model=m.pt prune=<cut> prune_by=latency`` prunes it (``api.prune``: BN |gamma| ranking,
``prune_round=auto``, from an empty cache of this benchmark's own). Then the unpruned and every pruned model are
exported (``YOLO(...).export``) and timed again the way a user would: batch 1, one thread, the runtime's own
session, all of a model's variants interleaved, the median of 100 rounds after warm-up. It prints predicted and
measured latency ratios, measured / budget (goal <= 1.05), the time of the first pruning (measuring
``prune_round=auto``, the layers and the whole-model fit) and of a second one (cached), and the machine's load
average before and after.

``accuracy`` (training, the harder built-in data at 128 px, SGD, one base per family): at the same measured
latency (at ``--imgsz``, the deployment size), ``prune_by=latency`` against ``prune_by=flops`` (both Taylor-ranked
on the data, both fine-tuned the same epochs), the unpruned yolov8n trained the same total epochs, and yolov8s slimmed
to yolov8n's measured latency. Writes ``accuracy.png`` (mAP50-95 against measured latency) and ``accuracy.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import common  # noqa: F401 - applies ultra-prune, offline
import torch
from torch import nn

from ultra_prune.latency import Cache, LatencyTable, preferred_round
from ultra_prune.pruning import prune_model
from ultra_prune.report import gflops
from ultra_prune.runtimes import interleaved_ms, runtime_for

MODELS = ["yolov8n.yaml", "yolov8s.yaml", "yolo11n.yaml", "yolo26n.yaml", "yolov8n-seg.yaml"]


def build(yaml: str, seed: int = 0) -> nn.Module:
    from ultralytics.nn import tasks

    torch.manual_seed(seed)
    cls = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel}[tasks.guess_model_task(yaml)]
    model = cls(yaml, verbose=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.05)
    return model.eval()


def budget(a) -> list[dict]:
    from ultra_prune import latency
    from ultra_prune.api import prune
    from ultra_prune.checkpoint import save_model

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':<14}{'runtime':<13}{'cut':>5}{'round':>6}{'pred':>8}{'meas':>8}{'meas/budget':>12}"
          f"{'GFLOPs':>8}{'ms before':>10}{'cold s':>8}{'hit s':>7}  goal")
    for runtime_name in a.runtimes:
        runtime = runtime_for(runtime_name)
        cache_file = out / f"latency_{runtime_name}.json"
        cache_file.unlink(missing_ok=True)  # cold: this benchmark measures from nothing, in its own cache
        latency.cache_path = lambda f=cache_file: f
        for yaml in a.models:
            model = build(yaml)
            src = save_model(model, out / f"{yaml[:-5]}.pt", exist_ok=True)
            pruned, cold = [], 0.0
            for cut in a.cuts:  # the user's command: yolo prune model=src prune=cut prune_by=latency
                t = time.perf_counter()
                pruned.append(prune(src, prune=cut, prune_by="latency", imgsz=a.imgsz, latency_runtime=runtime_name,
                                    prune_round=a.round or None, verbose=False, exist_ok=True, report_files=False,
                                    prune_out=out / f"{yaml[:-5]}_{runtime_name}_{cut:g}.pt"))
                cold = cold or time.perf_counter() - t
            t = time.perf_counter()
            prune(src, prune=a.cuts[0], prune_by="latency", imgsz=a.imgsz, latency_runtime=runtime_name,
                  prune_round=a.round or None, verbose=False, prune_out=out / "again.pt", exist_ok=True,
                  report_files=False)
            hit = time.perf_counter() - t
            ms = interleaved_ms(runtime.models([model] + [p for p, _ in pruned], a.imgsz, 1), rounds=100)
            g0 = gflops(model, a.imgsz)
            for cut, (p, report), m in zip(a.cuts, pruned, ms[1:]):
                pb, pa = report.latency_predicted
                row = dict(model=yaml, runtime=runtime_name, cut=cut, round=report.prune_round, predicted=pa / pb,
                           measured=m / ms[0], over=m / ms[0] / (1 - cut), gflops=gflops(p, a.imgsz) / g0,
                           ms_before=ms[0], ms_after=m, predicted_ms=(pb, pa), cold_s=cold, hit_s=hit,
                           report_measured=report.latency_measured)
                rows.append(row)
                print(f"{yaml[:-5]:<14}{runtime_name:<13}{cut:>5.1f}{row['round']:>6}{row['predicted']:>8.3f}"
                      f"{row['measured']:>8.3f}{row['over']:>12.3f}{row['gflops']:>8.3f}{ms[0]:>10.2f}{cold:>8.1f}"
                      f"{hit:>7.2f}  {'met' if row['over'] <= 1.05 else 'NOT met'}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    (out / "budget.json").write_text(json.dumps(rows, indent=1))
    return rows


def accuracy(a) -> list[dict]:
    from common import checkpoint_model, hard_dataset, map50_95, train

    from ultra_prune.calibrate import taylor_scores
    from ultra_prune.checkpoint import save_model
    from ultra_prune.pruning.importance import Taylor

    out = Path(a.out).resolve()
    common.REUSE = True  # finished runs in --out are kept (their pruned inputs too)
    data = hard_dataset(out / "data")
    kw = dict(optimizer="SGD", imgsz=128)
    runtime = runtime_for("onnxruntime")
    cache = Cache(out / "latency_onnxruntime.json")  # this benchmark's own measurements, not the user's cache
    e0, e1 = a.base_epochs, a.finetune_epochs
    base_n = train("yolov8n.yaml", data, out, "n_base", epochs=e0, **kw)
    base_s = train("yolov8s.yaml", data, out, "s_base", epochs=e0, **kw)
    round_to = a.round or preferred_round(runtime, checkpoint_model(base_n), a.imgsz, cache=cache, verbose=False)
    table = LatencyTable(runtime, round_to, cache=cache, verbose=False)
    plain_n = train("yolov8n.yaml", data, out, "n_plain", epochs=e0 + e1, **kw)
    lat_n, lat_s = table.whole([checkpoint_model(base_n), checkpoint_model(base_s)], a.imgsz)

    def slim(weights, name, ratio, by):
        """Prune ``weights`` (Taylor scores from the data at the training size, the budget at --imgsz), then
        fine-tune; ``by='flops'``: at the GFLOPs share whose predicted latency is the latency arm's at ``ratio``."""
        pruned_pt = out / f"{name}.pt"
        if (out / name / "weights" / "last.pt").exists():
            return train(pruned_pt, data, out, name, epochs=e1, **kw)  # done before (reused)
        model = checkpoint_model(weights)
        importance = Taylor(taylor_scores(model, str(data), 128, 16))
        if by == "flops":
            want, lo, hi = table.model(model, a.imgsz).total * (1 - ratio), 0.0, 0.95
            for _ in range(12):
                mid = (lo + hi) / 2
                p, _ = prune_model(model, mid, 8, 8, "flops", a.imgsz, importance=importance)
                lo, hi = (mid, hi) if table.model(p, a.imgsz).latency() > want else (lo, mid)
            pruned, _ = prune_model(model, hi, 8, 8, "flops", a.imgsz, importance=importance)
        else:
            pruned, _ = prune_model(model, ratio, round_to, 8, "latency", a.imgsz, importance=importance,
                                    latency=table.model)
        save_model(pruned, pruned_pt, exist_ok=True)
        return train(pruned_pt, data, out, name, epochs=e1, **kw)

    arms = {}
    for cut in a.cuts:
        arms[f"n latency -{cut:.0%}"] = slim(base_n, f"n_latency_{cut}", cut, "latency")
        arms[f"n flops, latency of -{cut:.0%}"] = slim(base_n, f"n_flops_{cut}", cut, "flops")
    arms["s latency = n's"] = slim(base_s, "s_to_n", 1 - lat_n / lat_s, "latency")
    arms["n plain"], arms["n base"], arms["s base"] = plain_n, base_n, base_s
    ms = interleaved_ms(runtime.models([checkpoint_model(w) for w in arms.values()], a.imgsz, 1), rounds=100)
    rows = []
    print(f"load average: {os.getloadavg()[0]:.2f}")
    print(f"\n{'arm':<34}{'epochs':>7}{'mAP50-95':>10}{'ms @' + str(a.imgsz):>10}{'GFLOPs':>8}")
    for (name, w), m in zip(arms.items(), ms):
        epochs = e0 if "base" in name else e0 + e1
        row = dict(arm=name, epochs=epochs, map=map50_95(w, data), ms=m, gflops=gflops(checkpoint_model(w), a.imgsz))
        rows.append(row)
        print(f"{name:<34}{epochs:>7}{row['map']:>10.4f}{m:>10.2f}{row['gflops']:>8.3f}")
    (out / "accuracy.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "accuracy.png", a.imgsz)
    return rows


def plot(rows, path, imgsz) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    kinds = {"prune_by=latency": lambda r: r["arm"].startswith("n latency"),
             "prune_by=flops": lambda r: "flops" in r["arm"],
             "unpruned, and s slimmed to n's latency": lambda r: r["arm"].startswith(("n plain", "n base", "s "))}
    for (label, pick), marker in zip(kinds.items(), "os*"):
        sel = [r for r in rows if pick(r)]
        ax.scatter([r["ms"] for r in sel], [r["map"] for r in sel], marker=marker, label=label)
        for r in sel:
            ax.annotate(r["arm"], (r["ms"], r["map"]), fontsize=6)
    ax.set_xlabel(f"onnxruntime CPU latency, ms (batch 1, 1 thread, {imgsz} px)")
    ax.set_ylabel("mAP50-95 (harder built-in data)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["budget", "accuracy"])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--round", type=int, default=0, help="prune_round (default: auto, measured per model)")
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--out", default="runs/bench_latency")
    a = ap.parse_args()
    torch.set_num_threads(1)
    (budget if a.part == "budget" else accuracy)(a)


if __name__ == "__main__":
    main()

"""The whole slimming pipeline in one call: base -> sparse -> prune -> fine-tune -> ONNX, with a summary table."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ultra_prune.errors import UltraPruneError


def onnx_latencies_ms(onnx_paths, imgsz: int, rounds: int = 50, warmup: int = 10) -> list[float]:
    """Median onnxruntime CPU latency (ms, batch 1, one thread) of each model of ``onnx_paths``, timed interleaved in
    one process (``runtimes.interleaved_ms``), so the machine's load and clock weigh on all of them alike."""
    from ultra_prune.runtimes import OnnxRuntime, interleaved_ms

    runtime = OnnxRuntime()
    return interleaved_ms([runtime.session(p, (1, 3, imgsz, imgsz)) for p in onnx_paths], rounds, warmup)


def _measure(weights, data, imgsz) -> dict:
    """params, GFLOPs, mAP50-95 and the ONNX export (path, MiB, as the exporter counts) of a checkpoint."""
    from ultralytics import YOLO

    from ultra_prune.report import count_params, gflops

    model = YOLO(str(weights))
    row = {"weights": str(weights), "params": count_params(model.model), "gflops": gflops(model.model, imgsz)}
    with tempfile.TemporaryDirectory() as tmp:
        metrics = YOLO(str(weights)).val(data=str(data), imgsz=imgsz, batch=32, plots=False, verbose=False,
                                         project=tmp, name="val")
    row["map50_95"] = float(metrics.box.map)
    row["onnx"] = str(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, simplify=False, verbose=False))
    row["onnx_mib"] = Path(row["onnx"]).stat().st_size / 2**20
    return row


def table(rows: dict) -> str:
    """The summary as a fixed-width table."""
    head = f"{'model':<12}{'params':>12}{'GFLOPs':>9}{'mAP50-95':>10}{'ONNX MiB':>10}{'ORT ms':>9}"
    lines = [head]
    for name, r in rows.items():
        lines.append(f"{name:<12}{r['params']:>12,}{r['gflops']:>9.3f}{r['map50_95']:>10.4f}{r['onnx_mib']:>10.2f}"
                     f"{r['latency_ms']:>9.2f}")
    lines.append("ORT ms: onnxruntime CPU, batch 1, 1 thread, median of 50 interleaved rounds after warm-up")
    return "\n".join(lines)


def run(out="ultra_prune_demo", data=None, model="yolov8n.yaml", epochs=1.0, imgsz=128, sparsity_target=0.5,
        prune_by="channels", batch=16, exist_ok=False) -> dict:
    """Run the pipeline into folder ``out`` and return the per-stage measurements.

    ``epochs`` scales every stage's epoch count (base 20, sparse 10, fine-tune 10 at 1.0); ``data`` and ``model``
    point it at a real dataset yaml and model (default: the built-in generated dataset and yolov8n from yaml).
    Every stage trains with the same optimizer (SGD, lr0=0.01); sparse training drives ``sparsity_target`` of the
    channels (or GFLOPs, ``prune_by='flops'``) to zero, and pruning removes them at the recorded target.
    """
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.api import prune as prune_job
    from ultra_prune.plots import plot_demo
    from ultra_prune.dataset import make_dataset
    from ultra_prune.sparsity import gamma_values

    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not exist_ok:
        raise UltraPruneError(f"output folder '{out}' already exists and is not empty; pass out=<new folder> or exist_ok=True")
    if not (isinstance(epochs, (int, float)) and epochs > 0):
        raise UltraPruneError(f"'epochs={epochs}' must be a number > 0 (it scales each stage's epochs)")
    out.mkdir(parents=True, exist_ok=True)
    prefix = colorstr("ultra-prune demo:")
    if data is None:
        data = make_dataset(out / "data", n_train=256, n_val=64, imgsz=imgsz)
    n = {k: max(1, round(v * epochs)) for k, v in {"base": 20, "sparse": 10, "finetune": 10}.items()}
    common = dict(data=str(data), imgsz=imgsz, batch=batch, nbs=batch, workers=0, plots=True, exist_ok=True,
                  project=str(out), optimizer="SGD", lr0=0.01, seed=0, deterministic=True, amp=False)
    t0 = time.time()
    LOGGER.info(f"{prefix} 1/4 base training ({n['base']} epochs)")
    YOLO(model).train(name="base", epochs=n["base"], **common)
    base = out / "base" / "weights" / "last.pt"
    LOGGER.info(f"{prefix} 2/4 sparse training ({n['sparse']} epochs, sparsity_target={sparsity_target}, "
                f"prune_by={prune_by})")
    YOLO(str(base)).train(name="sparse", epochs=n["sparse"], sparsity_target=sparsity_target, prune_by=prune_by,
                          **common)
    sparse = out / "sparse" / "weights" / "last.pt"
    LOGGER.info(f"{prefix} 3/4 pruning at the recorded target")
    pruned, report = prune_job(sparse, prune_out=out / "pruned.pt", exist_ok=True, imgsz=imgsz)
    if report is None:
        raise UltraPruneError("nothing was pruned: every layer is at its floor; lower prune_min or use a wider model")
    report.save(out / "prune_report.txt")
    LOGGER.info(f"{prefix} 4/4 fine-tuning ({n['finetune']} epochs)")
    YOLO(str(out / "pruned.pt")).train(name="finetune", epochs=n["finetune"], **common)
    finetuned = out / "finetune" / "weights" / "last.pt"

    stages = {"base": base, "sparse": sparse, "pruned": out / "pruned.pt", "fine-tuned": finetuned}
    rows = {name: _measure(w, data, imgsz) for name, w in stages.items()}
    for row, ms in zip(rows.values(), onnx_latencies_ms([r["onnx"] for r in rows.values()], imgsz)):
        row["latency_ms"] = ms

    from ultra_prune.checkpoint import load_model

    gammas = {"base": gamma_values(load_model(base)[0]).numpy(), "sparse": gamma_values(load_model(sparse)[0]).numpy()}
    png = plot_demo(rows, gammas, out / "demo.png")
    summary = {"rows": rows, "epochs": n, "imgsz": imgsz, "sparsity_target": sparsity_target, "prune_by": prune_by,
               "seconds": time.time() - t0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.txt").write_text(table(rows) + "\n")
    LOGGER.info(f"\n{prefix} done in {summary['seconds'] / 60:.1f} min\n{table(rows)}\n"
                f"plots: {png}\nsummary: {out / 'summary.json'}")
    return summary

"""The whole slimming pipeline in one call: base -> one-shot prune and fine-tune (or the classic sparse -> prune ->
fine-tune) -> ONNX, with a summary table."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from ultra_prune.errors import UltraPruneError


def onnx_latencies_ms(onnx_paths, imgsz: int, rounds: int = 50, warmup: int = 10) -> list[float]:
    """Median onnxruntime CPU latency (ms, batch 1, one thread) of each model of ``onnx_paths``, timed interleaved in
    one process (``runtimes.interleaved_ms``), so the machine's load and clock weigh on all of them alike."""
    from ultra_prune.latency.runtimes import Local, interleaved_ms

    runtime = Local("onnxruntime")
    return interleaved_ms([runtime.session(p, (1, 3, imgsz, imgsz)) for p in onnx_paths], rounds, warmup)


def _measure(weights, data, imgsz) -> dict:
    """params, GFLOPs, mAP50-95 and the ONNX export (path, MiB, as the exporter counts) of a checkpoint."""
    from ultralytics import YOLO

    from ultra_prune.engine.report import count_params, gflops

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


RECIPES = ("oneshot", "classic")


def run(out="ultra_prune_demo", data=None, model="yolov8n.yaml", epochs=1.0, imgsz=128, recipe="oneshot", prune=0.5,
        prune_by="flops", batch=16, exist_ok=False) -> dict:
    """Run the pipeline into folder ``out`` and return the per-stage measurements.

    ``recipe='oneshot'`` (the default, the best recipe at equal epochs in ``benchmarks/bench_recipes.py``): base
    training, then one run ``train(prune=<prune>, prune_by=<prune_by>)`` that prunes by Taylor scores and fine-tunes.
    ``recipe='classic'``: base training, sparse training to ``sparsity_target=<prune>``, ``prune`` at the recorded
    target, fine-tuning. ``epochs`` scales every stage's epoch count (base 20, then 20 after it: one-shot 20, or
    sparse 10 + fine-tune 10, at 1.0); ``data`` and ``model`` point it at a real dataset yaml and model (default:
    the built-in generated dataset and yolov8n from yaml). Every stage trains with SGD, lr0=0.01.
    """
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.io.plots import plot_demo
    from ultra_prune.commands.dataset import make_dataset
    from ultra_prune.slimming.sparsity import gamma_values

    out = Path(out).resolve()
    if recipe not in RECIPES:
        raise UltraPruneError(f"'recipe={recipe}' is not one of {RECIPES}; e.g. ultra-prune demo recipe=oneshot")
    if not (isinstance(epochs, (int, float)) and epochs > 0):
        raise UltraPruneError(f"'epochs={epochs}' must be a number > 0 (it scales each stage's epochs)")
    if not (isinstance(prune, (int, float)) and 0 < prune < 1):
        raise UltraPruneError(f"'prune={prune}' must be a share between 0 and 1 (e.g. prune=0.5: remove half)")
    if out.exists() and any(out.iterdir()) and not exist_ok:
        raise UltraPruneError(f"output folder '{out}' already exists and is not empty; pass out=<new folder> or exist_ok=True")
    out.mkdir(parents=True, exist_ok=True)
    prefix = colorstr("ultra-prune demo:")
    if data is None:
        data = make_dataset(out / "data", n_train=256, n_val=64, imgsz=imgsz)
    n = {k: max(1, round(v * epochs)) for k, v in {"base": 20, "after": 20, "half": 10}.items()}
    common = dict(data=str(data), imgsz=imgsz, batch=batch, nbs=batch, workers=0, plots=True, exist_ok=True,
                  project=str(out), optimizer="SGD", lr0=0.01, seed=0, deterministic=True, amp=False)
    t0 = time.time()
    steps = 2 if recipe == "oneshot" else 4
    LOGGER.info(f"{prefix} 1/{steps} base training ({n['base']} epochs)")
    YOLO(model).train(name="base", epochs=n["base"], **common)
    base = out / "base" / "weights" / "last.pt"
    if recipe == "oneshot":
        stages = _oneshot(base, out, n, prune, prune_by, common, prefix)
    else:
        stages = _classic(base, out, n, prune, prune_by, common, prefix, imgsz)
    rows = {name: _measure(w, data, imgsz) for name, w in stages.items()}
    for row, ms in zip(rows.values(), onnx_latencies_ms([r["onnx"] for r in rows.values()], imgsz)):
        row["latency_ms"] = ms

    from ultra_prune.io.checkpoint import load_model

    sparse = recipe == "classic"  # |gamma| says something only where sparse training ran
    gammas = {name: gamma_values(load_model(stages[name])[0]).numpy() for name in ("base", "sparse")} if sparse else None
    png = plot_demo(rows, gammas, out / "demo.png")
    summary = {"rows": rows, "recipe": recipe, "epochs": n, "imgsz": imgsz, "prune": prune, "prune_by": prune_by,
               "seconds": time.time() - t0}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.txt").write_text(table(rows) + "\n")
    LOGGER.info(f"\n{prefix} done in {summary['seconds'] / 60:.1f} min\n{table(rows)}\n"
                f"plots: {png}\nsummary: {out / 'summary.json'}")
    return summary


def _oneshot(base, out, n, prune, prune_by, common, prefix) -> dict:
    """One run: prune the base by Taylor scores, then fine-tune it for all the epochs after the base."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    LOGGER.info(f"{prefix} 2/2 one-shot pruning and fine-tuning ({n['after']} epochs, prune={prune}, "
                f"prune_by={prune_by})")
    YOLO(str(base)).train(name="oneshot", epochs=n["after"], prune=prune, prune_by=prune_by, **common)
    weights = out / "oneshot" / "weights"
    return {"base": base, "pruned": weights / "pruned.pt", "fine-tuned": weights / "last.pt"}


def _classic(base, out, n, prune, prune_by, common, prefix, imgsz) -> dict:
    """The classic network-slimming steps: sparse training to the target, pruning at it, fine-tuning."""
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    from ultra_prune.commands.prune import prune as prune_job

    LOGGER.info(f"{prefix} 2/4 sparse training ({n['half']} epochs, sparsity_target={prune}, prune_by={prune_by})")
    YOLO(str(base)).train(name="sparse", epochs=n["half"], sparsity_target=prune, prune_by=prune_by, **common)
    sparse = out / "sparse" / "weights" / "last.pt"
    LOGGER.info(f"{prefix} 3/4 pruning at the recorded target")
    pruned, report = prune_job(sparse, prune_out=out / "pruned.pt", exist_ok=True, imgsz=imgsz)
    if report is None:
        raise UltraPruneError("nothing was pruned: every layer is at its floor; lower prune_min or use a wider model")
    report.save(out / "prune_report.txt")
    LOGGER.info(f"{prefix} 4/4 fine-tuning ({n['half']} epochs)")
    YOLO(str(out / "pruned.pt")).train(name="finetune", epochs=n["half"], **common)
    return {"base": base, "sparse": sparse, "pruned": out / "pruned.pt",
            "fine-tuned": out / "finetune" / "weights" / "last.pt"}

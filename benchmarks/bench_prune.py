"""Pruning benchmark: how long ``prune_model`` takes, and what the pruned model buys on onnxruntime (CPU).

    python benchmarks/bench_prune.py                       # yolov8n/s/m/l/x timing; latency of n and s at 320/640
    python benchmarks/bench_prune.py --latency n,s,m --runs 10 --imgsz 320 640

Models are built from yaml (no downloads) with seeded random BatchNorm scales, so the global |gamma| ranking is
non-trivial. Part 1 times ``prune_model(model, prune)`` on CPU (goal: yolov8x under 5 s). Part 2 exports the
original and the pruned model (both fused, as deployed) with ``torch.onnx.export`` and times them on the
onnxruntime CPU provider, interleaved run by run so both see the same machine load; it prints the latency ratio
pruned/original next to the GFLOPs and parameter ratios.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402


def build(scale: str, seed: int = 0):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(f"yolov8{scale}.yaml", verbose=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model.eval()


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def export_onnx(model, imgsz: int, path: Path) -> Path:
    """The model as deployed: fused, Detect in export mode (one output tensor), fp32, static shape."""
    m = copy.deepcopy(model).eval().fuse(verbose=False)
    m.model[-1].export = True
    x = torch.zeros(1, 3, imgsz, imgsz)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, x, str(path), input_names=["images"], output_names=["output0"], opset_version=17,
                          dynamo=False)
    return path


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved_latency(sessions: list, imgsz: int, runs: int, warmup: int = 2) -> list[float]:
    """Median seconds per run of each session, run alternately on the same input."""
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    feeds = [{s.get_inputs()[0].name: x} for s in sessions]
    for _ in range(warmup):
        for s, f in zip(sessions, feeds):
            s.run(None, f)
    times = [[] for _ in sessions]
    for _ in range(runs):
        for t, s, f in zip(times, sessions, feeds):
            t0 = time.perf_counter()
            s.run(None, f)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="n,s,m,l,x", help="yolov8 scales to time pruning on")
    ap.add_argument("--latency", default="n,s", help="scales to export and time on onnxruntime ('' = none)")
    ap.add_argument("--prune", type=float, default=0.5)
    ap.add_argument("--round", type=int, default=8, dest="round_to")
    ap.add_argument("--min", type=int, default=8, dest="floor")
    ap.add_argument("--imgsz", type=int, nargs="+", default=[320, 640])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="onnxruntime intra-op threads")
    args = ap.parse_args(argv)

    import ultralytics

    import ultra_prune
    from ultra_prune.pruning import prune_model
    from ultra_prune.engine.report import gflops

    print(f"ultra-prune {ultra_prune.__version__}, ultralytics {ultralytics.__version__}, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    print(f"prune={args.prune} prune_round={args.round_to} prune_min={args.floor}\n")

    print("1. pruning time (CPU; build and BN randomisation not counted)")
    print(f"{'model':<9}{'prune s':>9}{'params before':>15}{'after':>12}{'ratio':>8}"
          f"{'GFLOPs@640':>12}{'after':>9}{'ratio':>8}")
    pruned = {}
    for scale in args.models.split(","):
        model = build(scale)
        t0 = time.perf_counter()
        p, _ = prune_model(model, args.prune, args.round_to, args.floor)
        dt = time.perf_counter() - t0
        pb, pa = n_params(model), n_params(p)
        fb, fa = gflops(model, 640), gflops(p, 640)
        goal = "  (goal < 5 s: " + ("met)" if dt < 5 else "MISSED)") if scale == "x" else ""
        print(f"yolov8{scale:<3}{dt:>9.2f}{pb:>15,}{pa:>12,}{pa / pb:>8.3f}{fb:>12.2f}{fa:>9.2f}{fa / fb:>8.3f}{goal}",
              flush=True)
        if scale in args.latency.split(","):
            pruned[scale] = (model, p)
        del model, p

    latency = [s for s in args.latency.split(",") if s]
    if not latency:
        return
    print(f"\n2. onnxruntime CPU latency, {args.threads} threads, median of {args.runs} interleaved runs "
          "(torch.onnx.export, fused, batch 1)")
    print(f"{'model':<9}{'imgsz':>6}{'original ms':>13}{'pruned ms':>11}{'latency ratio':>15}{'GFLOPs ratio':>14}"
          f"{'params ratio':>14}")
    with tempfile.TemporaryDirectory() as tmp:
        for scale in latency:
            model, p = pruned.get(scale) or (lambda m: (m, prune_model(m, args.prune, args.round_to, args.floor)[0]))(
                build(scale))
            for imgsz in args.imgsz:
                a = session(export_onnx(model, imgsz, Path(tmp) / f"{scale}_{imgsz}.onnx"), args.threads)
                b = session(export_onnx(p, imgsz, Path(tmp) / f"{scale}_{imgsz}_pruned.onnx"), args.threads)
                ta, tb = interleaved_latency([a, b], imgsz, args.runs)
                flops = gflops(p, imgsz) / gflops(model, imgsz)
                print(f"yolov8{scale:<3}{imgsz:>6}{ta * 1e3:>13.1f}{tb * 1e3:>11.1f}{tb / ta:>15.3f}{flops:>14.3f}"
                      f"{n_params(p) / n_params(model):>14.3f}", flush=True)


if __name__ == "__main__":
    main()

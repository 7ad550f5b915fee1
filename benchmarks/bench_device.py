"""``prune_by=latency`` through the agent: does the latency measured on the device land on the budget, and does a
device that differs from the training machine get its own pruning?

    python benchmarks/bench_device.py budget [--models yolov8n.yaml ...] [--targets onnxruntime:fp32 ...]
                                             [--cuts 0.3 0.5 0.7] [--imgsz 320] [--round 16] [--out DIR]
    python benchmarks/bench_device.py there  [--model yolov8n.yaml] [--cut 0.5] [--imgsz 320] [--threads 2]

Each target (``runtime:precision``) is an agent started as a device runs it: its own virtual environment under
``--out`` with numpy and that runtime only (no torch), over loopback. ``budget``: every model (from yaml, seeded
random BatchNorm scales) is pruned by each cut of its latency on the agent, as ``yolo prune ... prune_by=latency
latency_device=http://...`` prunes it (``prune_depth=True``, BN |gamma| ranking, a cache of this benchmark's own);
the measured ratio is the agent's timing of the exported unpruned and pruned models (interleaved, what ``prune=``
checks). Then the same pruning again with the agent stopped: its time and whether it measured anything. Prints one
row per model, target and cut (measured / budget, goal <= 1.05) and writes ``device_budget.json``.

``there``: a device profile the training machine does not have (onnxruntime with ``--threads`` threads on the
agent, the trainer timing with one): the model pruned by the cut of the latency measured locally and of the latency
measured on the agent, both then timed on the agent side by side (interleaved): the locally-aimed pruning against
the budget there.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import common  # noqa: F401 - applies ultra-prune, offline
import torch
from torch import nn

from ultra_prune.commands.prune import prune
from ultra_prune.latency import table as latency

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from agents import Running, agent_env  # noqa: E402 - the agent as the tests run it

TARGETS = ("onnxruntime:fp32", "onnxruntime:int8", "openvino:fp32", "openvino:int8", "ncnn:fp32", "mnn:fp32",
           "mnn:int8", "litert:fp32")


def start_agent(out: Path, target: str, *args: str) -> Running:
    """An agent of ``target`` (runtime:precision) on a free loopback port, in its own environment under ``out``."""
    runtime, precision = target.split(":")
    return Running(agent_env(runtime, precision, out), f"runtime={runtime}", f"precision={precision}", *args)


def random_model(yaml: str, seed: int = 0) -> nn.Module:
    """``yaml``'s model with seeded random BatchNorm scales (something to rank channels by)."""
    from ultralytics import YOLO

    torch.manual_seed(seed)
    model = YOLO(yaml).model
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.05, 1.0)
    return model.eval()


def budget(a) -> None:
    rows = []
    for target in a.targets:
        for yaml in a.models:
            model = random_model(yaml)
            for cut in a.cuts:
                agent = start_agent(a.out, target)
                t0 = time.perf_counter()
                _, report = prune(model, cut, prune_by="latency", latency_device=agent.url, imgsz=a.imgsz,
                                  prune_round=a.round, verbose=False, report_files=False)
                first = time.perf_counter() - t0
                agent.stop()  # the same pruning again: from the cache, with no agent
                t0 = time.perf_counter()
                _, again = prune(model, cut, prune_by="latency", latency_device=agent.url, imgsz=a.imgsz,
                                 prune_round=a.round, verbose=False, report_files=False)
                second = time.perf_counter() - t0
                (mb, ma), (pb, pa) = report.latency_measured, report.latency_predicted
                row = {"model": yaml, "target": target, "cut": cut, "before_ms": mb, "after_ms": ma,
                       "measured_over_budget": ma / mb / (1 - cut), "predicted_ratio": pa / pb,
                       "first_s": first, "second_s": second, "second_same": again.latency_measured == (mb, ma),
                       "on": report.latency_runtime}
                rows.append(row)
                print(f"{yaml:<14} {target:<17} -{cut:.0%}: {mb:7.2f} -> {ma:7.2f} ms, measured/budget "
                      f"{row['measured_over_budget']:.3f}, predicted ratio {row['predicted_ratio']:.3f}; first "
                      f"{first:5.1f} s, again with the agent stopped {second:4.2f} s", flush=True)
    path = a.out / "device_budget.json"  # rows of earlier runs kept, unless measured again here
    key = lambda r: (r["model"], r["target"], r["cut"])  # noqa: E731
    earlier = [r for r in (json.loads(path.read_text()) if path.exists() else []) if key(r) not in set(map(key, rows))]
    path.write_text(json.dumps(earlier + rows, indent=1))
    worst = max(r["measured_over_budget"] for r in rows)
    print(f"\nworst measured/budget {worst:.3f} (goal <= 1.05); slowest second pruning "
          f"{max(r['second_s'] for r in rows):.2f} s (goal < 2 s)")


def there(a) -> None:
    """Local aim against the agent's own, timed on the agent."""
    from ultra_prune.latency.remote import Remote
    from ultra_prune.latency.runtimes import Local

    agent = start_agent(a.out, "onnxruntime:fp32", f"threads={a.threads}")
    model = random_model(a.model)
    try:
        here, rep_here = prune(model, a.cut, prune_by="latency", imgsz=a.imgsz, prune_round=a.round,
                               verbose=a.verbose, report_files=False)
        there_, rep_there = prune(model, a.cut, prune_by="latency", latency_device=agent.url, imgsz=a.imgsz,
                                  prune_round=a.round, verbose=a.verbose, report_files=False)
        on_agent = latency.LatencyTable(Remote(agent.url, latency.Cache()), a.round, 1, verbose=False)
        ms = on_agent.time_models([model, here, there_], a.imgsz, rounds=100)
    finally:
        agent.stop()
    widths = lambda m: sum(x.out_channels for x in m.modules() if isinstance(x, nn.Conv2d))  # noqa: E731
    print(f"{a.model} -{a.cut:.0%} of the latency; trainer: {Local('onnxruntime').key()}; agent: {rep_there.latency_runtime}")
    for name, m, t in (("unpruned", model, ms[0]), ("aimed here", here, ms[1]), ("aimed on the agent", there_, ms[2])):
        print(f"  {name:<20} {widths(m):6d} conv channels  {t:7.2f} ms on the agent  "
              f"{t / ms[0] / (1 - a.cut):.3f}x the budget there")
    same = [p.shape for p in here.parameters()] == [p.shape for p in there_.parameters()]
    print(f"  the two prunings are {'the same' if same else 'different'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("budget", "there"))
    ap.add_argument("--models", nargs="+", default=["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
    ap.add_argument("--model", default="yolov8n.yaml")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--cuts", nargs="+", type=float, default=[0.3, 0.5, 0.7])
    ap.add_argument("--cut", type=float, default=0.5)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--round", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_device"))
    ap.add_argument("--verbose", action="store_true", help="log each pruning (its corrections on the runtime)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    latency.cache_path = lambda: a.out / "latency.json"  # this benchmark's own cache
    {"budget": budget, "there": there}[a.what](a)


if __name__ == "__main__":
    main()

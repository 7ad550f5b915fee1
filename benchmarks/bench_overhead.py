"""Issue 2 benchmark: per-step cost of sparse training, measured side by side with plain steps in one run.

A training step here is forward + backward + SGD step of yolov8n on a batch; the sparse step adds the BN-L1
term (grad mode: lam*sign(gamma) into the gradients; prox/polar mode: the soft-threshold after the step). Steps
are interleaved (plain, grad, prox, polar, plain, ...) so drifts in machine load hit all three alike.

    python benchmarks/bench_overhead.py [--batch 8] [--imgsz 320] [--steps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ultralytics.nn.tasks import DetectionModel

from ultra_prune.slimming.sparsity import BNSparsity


def step(model, opt, x, sparsity=None, mode=None):
    t = time.perf_counter()
    out = model(x)
    loss = sum(o.float().mean() for o in (out.values() if isinstance(out, dict) else out) if torch.is_tensor(o))
    loss.backward()
    if mode == "grad":
        sparsity.add_l1_grad(model, epoch=0)
    opt.step()
    if mode in ("prox", "polar"):
        sparsity.proximal_step(opt, epoch=0, polar=mode == "polar")
    opt.zero_grad()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--model", default="yolov8n.yaml")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = DetectionModel(a.model, verbose=False).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    sparsity = BNSparsity(1e-2)
    sparsity.bind(model)
    x = torch.rand(a.batch, 3, a.imgsz, a.imgsz)
    for mode in (None, "grad", "prox", "polar"):  # warm-up
        step(model, opt, x, sparsity, mode)
    times = {None: [], "grad": [], "prox": [], "polar": []}
    for _ in range(a.steps):
        for mode in times:
            times[mode].append(step(model, opt, x, sparsity, mode))
    plain = statistics.median(times[None])
    print(f"{a.model} batch {a.batch} @ {a.imgsz}px, {a.steps} interleaved steps each, CPU threads "
          f"{torch.get_num_threads()}")
    print(f"plain step  median {plain * 1000:8.1f} ms")
    for mode in ("grad", "prox", "polar"):
        m = statistics.median(times[mode])
        print(f"{mode:<5} step  median {m * 1000:8.1f} ms   ratio {m / plain:.4f}  ({(m / plain - 1) * 100:+.2f}%)")
    # the sparsity work alone, timed in isolation (it is what the ratio above measures, without step noise)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    t = time.perf_counter()
    for _ in range(100):
        sparsity.add_l1_grad(model, epoch=0)
    grad_ms = (time.perf_counter() - t) * 10
    line = f"isolated, per step: grad term {grad_ms:.3f} ms ({grad_ms / (plain * 1000):.3%} of a plain step)"
    for polar in (False, True):
        t = time.perf_counter()
        for _ in range(100):
            sparsity.proximal_step(opt, epoch=0, polar=polar)
        ms = (time.perf_counter() - t) * 10
        line += f", {'polar' if polar else 'prox'} step {ms:.3f} ms ({ms / (plain * 1000):.3%})"
    print(line)


if __name__ == "__main__":
    main()

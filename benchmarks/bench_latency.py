"""``prune_by=latency``: does the measured latency land on the budget, and what does aiming at latency buy?

    python benchmarks/bench_latency.py budget   [--models yolov8n.yaml ...] [--runtimes onnxruntime openvino]
                                                [--cuts 0.3 0.5 0.7] [--imgsz 320] [--no-depth] [--repeats 3]
    python benchmarks/bench_latency.py accuracy [--base-epochs 20] [--finetune-epochs 10] [--imgsz 320]
                                                [--cuts 0.5] [--families v8 26] [--seed 0] [--teacher] [--n-only]
                                                [--runtimes onnxruntime | --device http://host:port]
    python benchmarks/bench_latency.py depth    [--families 26] [--cuts 0.7] [--runtimes openvino] [--imgsz 320]
                                                [--base-epochs 20] [--finetune-epochs 10]
    python benchmarks/bench_latency.py alone    [--models yolov8n.yaml ...] [--runtimes ...] [--cuts ...] --out DIR

``budget`` (no training): every model is built from yaml with seeded random BatchNorm scales, saved, and pruned the
way ``yolo prune model=m.pt prune=<cut> prune_by=latency`` prunes it (``commands.prune.prune``: BN |gamma| ranking,
``prune_round=auto``, ``prune_depth=True``, from an empty cache of this benchmark's own; ``--no-depth``:
``prune_depth=False``). Then the unpruned and every pruned model are exported (``YOLO(...).export``) and timed again
the way a user would: batch 1, one thread, the runtime's own session, all of a model's variants interleaved, the
median of 100 rounds after warm-up, three times over (``--repeats``): the ratio printed is the median of the three
ratios, and ``spread`` their range (the machine's own noise). It prints predicted and measured latency ratios,
measured / budget (goal <= 1.05), how many residual blocks went whole, the time of the first pruning (measuring
``prune_round=auto``, the layers and the whole-model fit) and of a second one (cached), the CPU and the machine's
load average before and after.

``accuracy`` (training, the harder built-in data at 128 px, SGD, one base per model): ``prune_by=latency`` of
yolov8n at each cut on the first of ``--runtimes`` (default onnxruntime; as ``prune=`` prunes: the exported result
checked on that runtime) against ``prune_by=flops`` at the GFLOPs share whose exported model measures as fast
(bisected on that runtime's timings at ``--imgsz``, the deployment size, each candidate interleaved with the latency
arm's model), both Taylor-ranked on the data and fine-tuned the same epochs, beside the yolov8n base trained on at
full width for as many epochs; every model of the table is timed on that runtime. Per family (``--families v8 26``):
the unpruned n model trained the same total epochs, and the s model slimmed to the n model's measured latency.
``--teacher``: also that slimmed s model fine-tuned with ``distill_model=`` its base trained on at full width for the
fine-tuning epochs (the teacher; in the table too).
``--n-only``: only the first family's n base, its latency and flops arms and its base trained on. Writes
``accuracy.png`` (mAP50-95 against measured latency) and ``accuracy.json``.

``depth`` (training, the same data and bases as ``accuracy``): what removing whole residual blocks costs where the
floors bind. The first family's n base is pruned by the last of ``--cuts`` of its latency on the first of
``--runtimes`` (as ``prune=`` prunes: Taylor-ranked, the exported result checked), once with ``prune_depth=True``
and once with ``prune_depth=False``; both, and the base at full width, are fine-tuned the same epochs, then
exported and timed on that runtime (interleaved, three times over). Writes ``depth.json``.

``alone`` (no pruning, no training): how the way of timing moves a ratio. For each model and runtime whose
``budget`` prunings are in ``--out`` (from an earlier ``budget`` run there), the unpruned model and its pruned copies
at ``--cuts`` are exported and timed four ways, ``--repeats`` times over: all interleaved (one run of each per
round, as ``budget`` times them), in pairs of the unpruned and one pruned model (as ``prune=``'s exported check times
them), in interleaved blocks (10 runs of each model in a row per round, the first 2 not counted: a model timed warm,
as a deployment that runs one model sees it, while the rounds still alternate between the models), and each alone
(100 runs in a row). Prints each pruned model's ratio to the unpruned one, each way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import common  # applies ultra-prune, offline
import torch
from torch import nn

from ultra_prune.latency.table import Cache, LatencyTable, preferred_round
from ultra_prune.pruning import prune_model
from ultra_prune.engine.report import gflops
from ultra_prune.latency.runtimes import cpu_name, interleaved_ms, runtime_for

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


def timed(runs, repeats: int = 3) -> list[tuple[float, float, tuple[float, float]]]:
    """Each of ``runs`` timed interleaved, 100 rounds, ``repeats`` times over: ``(median ms, median ratio to the
    first run, (lowest, highest) ratio)`` per run."""
    times = [interleaved_ms(runs, rounds=100) for _ in range(repeats)]
    out = []
    for i in range(len(runs)):
        ratios = sorted(ms[i] / ms[0] for ms in times)
        out.append((statistics.median(ms[i] for ms in times), statistics.median(ratios), (ratios[0], ratios[-1])))
    return out


def budget(a) -> list[dict]:
    from ultra_prune.latency import table as latency
    from ultra_prune.commands.prune import prune
    from ultra_prune.io.checkpoint import save_model

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"{cpu_name()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':<14}{'runtime':<13}{'cut':>5}{'round':>6}{'blocks':>7}{'pred':>8}{'meas':>8}{'spread':>13}"
          f"{'meas/budget':>12}{'GFLOPs':>8}{'ms before':>10}{'cold s':>8}{'hit s':>7}  goal")
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
                                    prune_out=out / f"{yaml[:-5]}_{runtime_name}_{cut:g}.pt",
                                    prune_depth=not a.no_depth))
                cold = cold or time.perf_counter() - t
            t = time.perf_counter()
            prune(src, prune=a.cuts[0], prune_by="latency", imgsz=a.imgsz, latency_runtime=runtime_name,
                  prune_round=a.round or None, verbose=False, prune_out=out / "again.pt", exist_ok=True,
                  report_files=False, prune_depth=not a.no_depth)
            hit = time.perf_counter() - t
            times = timed(runtime.models([model] + [p for p, _ in pruned], a.imgsz, 1), a.repeats)
            g0 = gflops(model, a.imgsz)
            for cut, (p, report), (ms, measured, (lo, hi)) in zip(a.cuts, pruned, times[1:]):
                pb, pa = report.latency_predicted
                row = dict(model=yaml, runtime=runtime_name, cut=cut, round=report.prune_round, predicted=pa / pb,
                           measured=measured, spread=(lo, hi), over=measured / (1 - cut),
                           blocks=len(report.removed_blocks), gflops=gflops(p, a.imgsz) / g0, ms_before=times[0][0],
                           ms_after=ms, predicted_ms=(pb, pa), cold_s=cold, hit_s=hit,
                           report_measured=report.latency_measured)
                rows.append(row)
                spread = f"{lo:.3f}-{hi:.3f}"
                print(f"{yaml[:-5]:<14}{runtime_name:<13}{cut:>5.1f}{row['round']:>6}{row['blocks']:>7}"
                      f"{row['predicted']:>8.3f}{measured:>8.3f}{spread:>13}{row['over']:>12.3f}{row['gflops']:>8.3f}"
                      f"{row['ms_before']:>10.2f}{cold:>8.1f}{hit:>7.2f}  {'met' if row['over'] <= 1.05 else 'NOT met'}",
                      flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    (out / "budget.json").write_text(json.dumps(rows, indent=1))
    return rows


FAMILIES = {"v8": ("yolov8n.yaml", "yolov8s.yaml"), "26": ("yolo26n.yaml", "yolo26s.yaml")}


def accuracy(a) -> list[dict]:
    from common import checkpoint_model, hard_dataset, map50_95, train

    from ultra_prune.config.settings import PruneConfig
    from ultra_prune.engine.calibrate import taylor_scores
    from ultra_prune.io.checkpoint import save_model
    from ultra_prune.latency.measured import prune_to_measured
    from ultra_prune.pruning.importance import Taylor

    out = Path(a.out).resolve()
    common.REUSE = True  # finished runs in --out are kept (their pruned inputs too)
    data = hard_dataset(out / "data")
    kw = dict(optimizer="SGD", imgsz=128, seed=a.seed)  # the bases: seed 0 (below)
    tag = f"_seed{a.seed}" if a.seed else ""
    cache_name = a.runtimes[0] if not a.device else "device"
    cache = Cache(out / f"latency_{cache_name}.json")  # this benchmark's own measurements, not the user's cache
    if a.device:  # every timing on the agent at that address (its runtime and precision)
        from ultra_prune.latency.remote import Remote

        runtime = Remote(a.device, cache)
        runtime_name = runtime.key()
    else:
        runtime_name = a.runtimes[0]
        runtime = runtime_for(runtime_name)
    e0, e1 = a.base_epochs, a.finetune_epochs

    def table_of(model, reach=0.0) -> LatencyTable:
        """The latency table at the rounding ``prune_round=auto`` picks for ``model`` to remove ``reach`` of its
        latency (or --round)."""
        round_to = a.round or preferred_round(runtime, model, a.imgsz, cache=cache, verbose=False, reach=reach)
        return LatencyTable(runtime, round_to, cache=cache, verbose=False)

    def on_runtime(models, rounds: int = 50) -> list[float]:
        """The models exported and timed interleaved on the runtime (ms)."""
        return LatencyTable(runtime, 8, cache=cache, verbose=False).time_models(models, a.imgsz, rounds=rounds)

    def measured_ratio(model, reference) -> float:
        """``model``'s measured latency over ``reference``'s, both exported and timed interleaved."""
        ms = on_runtime([model, reference])
        return ms[0] / ms[1]

    def slim(weights, name, ratio=None, like=None):
        """Prune ``weights`` (Taylor scores from the data at the training size, the budget at --imgsz), then
        fine-tune. ``ratio``: ``prune_by=latency`` as ``prune=`` does it (the exported result checked on the runtime
        and re-pruned when over its budget). ``like`` (a pruned .pt): ``prune_by=flops`` at the GFLOPs share whose
        exported model runs as fast as ``like``'s, bisected on measured timings."""
        name += tag
        pruned_pt = out / f"{name}.pt"
        if (out / name / "weights" / "last.pt").exists():
            return train(pruned_pt, data, out, name, epochs=e1, **kw)  # done before (reused)
        model = checkpoint_model(weights)
        importance = Taylor(taylor_scores(model, str(data), 128, 16))
        if like is not None:
            reference, lo, hi, tried = checkpoint_model(like), 0.0, 0.95, []
            for _ in range(8):
                mid = (lo + hi) / 2
                p, _ = prune_model(model, mid, 8, 8, "flops", a.imgsz, importance=importance)
                r = measured_ratio(p, reference)
                tried.append((abs(r - 1), mid, r, p))
                lo, hi = (mid, hi) if r > 1 else (lo, mid)
            _, share, r, pruned = min(tried, key=lambda t: t[0])
            print(f"{name}: prune={share:.3f} prune_by=flops runs at {r:.3f}x {like.name}'s measured latency",
                  flush=True)
        else:
            table = table_of(model, ratio)
            cfg = PruneConfig(ratio, "latency", round_to=table.round_to, floor=8, imgsz=a.imgsz, runtime=runtime_name)
            pruned, _, (before, after) = prune_to_measured(model, cfg, importance, table)
            print(f"{name}: prune={ratio:.3f} prune_by=latency measured {after / before:.3f} of the latency",
                  flush=True)
        save_model(pruned, pruned_pt, exist_ok=True)
        return train(pruned_pt, data, out, name, epochs=e1, **kw)

    arms = {}
    for family in a.families:
        n_yaml, s_yaml = FAMILIES[family]
        n, s = n_yaml[:-5].removeprefix("yolo"), s_yaml[:-5].removeprefix("yolo")
        base_n = train(n_yaml, data, out, f"{n}_base", epochs=e0, **{**kw, "seed": 0})
        if family == a.families[0]:
            for cut in a.cuts:
                arms[f"{n} latency -{cut:.0%}"] = slim(base_n, f"{n}_latency_{cut}", ratio=cut)
                arms[f"{n} flops, as fast as -{cut:.0%}"] = slim(base_n, f"{n}_flops_{cut}",
                                                                 like=out / f"{n}_latency_{cut}{tag}.pt")
            # the unpruned reference at the arms' epochs
            arms[f"{n} base trained on (full width)"] = train(base_n, data, out, f"{n}_more{tag}", epochs=e1, **kw)
        if a.n_only:
            arms[f"{n} base"] = base_n
            break
        base_s = train(s_yaml, data, out, f"{s}_base", epochs=e0, **{**kw, "seed": 0})
        lat_n, lat_s = table_of(checkpoint_model(base_n)).whole([checkpoint_model(base_n), checkpoint_model(base_s)],
                                                                a.imgsz)
        arms[f"{s} latency = {n}'s"] = slim(base_s, f"{s}_to_{n}", ratio=1 - lat_n / lat_s)
        if a.teacher:
            teacher = train(base_s, data, out, f"{s}_teacher", epochs=e1, **{**kw, "seed": 0})
            arms[f"{s} latency = {n}'s + teacher"] = train(out / f"{s}_to_{n}{tag}.pt", data, out,
                                                           f"{s}_to_{n}_teacher{tag}", epochs=e1,
                                                           distill_model=str(teacher), **kw)
            arms[f"{s} teacher (full width)"] = teacher
        arms[f"{n} plain"] = train(n_yaml, data, out, f"{n}_plain{tag}", epochs=e0 + e1, **kw)
        arms[f"{n} base"], arms[f"{s} base"] = base_n, base_s
    ms = on_runtime([checkpoint_model(w) for w in arms.values()], rounds=100)
    rows = []
    print(f"load average: {os.getloadavg()[0]:.2f}; seed {a.seed} (the bases: 0); ms on {runtime_name}")
    print(f"\n{'arm':<34}{'epochs':>7}{'mAP50-95':>10}{'ms @' + str(a.imgsz):>10}{'GFLOPs':>8}")
    for (name, w), m in zip(arms.items(), ms):
        epochs = e0 if name.endswith("base") else e0 + e1
        row = dict(arm=name, epochs=epochs, map=map50_95(w, data), ms=m, gflops=gflops(checkpoint_model(w), a.imgsz))
        rows.append(row)
        print(f"{name:<34}{epochs:>7}{row['map']:>10.4f}{m:>10.2f}{row['gflops']:>8.3f}")
    (out / f"accuracy{tag}.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / f"accuracy{tag}.png", a.imgsz, runtime_name)
    return rows


def depth(a) -> list[dict]:
    from common import checkpoint_model, hard_dataset, map50_95, train

    from ultra_prune.config.settings import PruneConfig
    from ultra_prune.engine.calibrate import taylor_scores
    from ultra_prune.io.checkpoint import save_model
    from ultra_prune.latency.measured import prune_to_measured
    from ultra_prune.pruning import MARKER
    from ultra_prune.pruning.importance import Taylor

    out = Path(a.out).resolve()
    common.REUSE = True
    data = hard_dataset(out / "data")
    kw = dict(optimizer="SGD", imgsz=128, seed=a.seed)
    name, cut = a.runtimes[0], a.cuts[-1]
    runtime, cache = runtime_for(name), Cache(out / f"latency_{name}.json")
    n_yaml = FAMILIES[a.families[0]][0]
    n = n_yaml[:-5].removeprefix("yolo")
    base = train(n_yaml, data, out, f"{n}_base", epochs=a.base_epochs, **{**kw, "seed": 0})
    model = checkpoint_model(base)
    round_to = a.round or preferred_round(runtime, model, a.imgsz, cache=cache, verbose=False, reach=cut)
    table = LatencyTable(runtime, round_to, cache=cache, verbose=False)
    importance = None
    arms, blocks = {}, {}
    for deep in (True, False):
        arm = f"{n}_{name}_{cut}_{'depth' if deep else 'widths'}"
        pt = out / f"{arm}.pt"
        if not pt.exists():
            importance = importance or Taylor(taylor_scores(model, str(data), 128, 16))
            cfg = PruneConfig(cut, "latency", round_to=round_to, floor=8, imgsz=a.imgsz, runtime=name, depth=deep)
            pruned, _, (before, after) = prune_to_measured(model, cfg, importance, table, verbose=False)
            print(f"{arm}: measured {after / before:.3f} of the latency when pruned", flush=True)
            save_model(pruned, pt, exist_ok=True)
        label = f"{n} -{cut:.0%} latency, prune_depth={deep}"
        blocks[label] = len(getattr(checkpoint_model(pt), MARKER)["history"][-1]["removed_blocks"])
        arms[label] = train(pt, data, out, arm, epochs=a.finetune_epochs, **kw)
    arms[f"{n} full width"] = train(base, data, out, f"{n}_full", epochs=a.finetune_epochs, **kw)
    times = timed(runtime.models([model] + [checkpoint_model(w) for w in arms.values()], a.imgsz, 1))
    print(f"{cpu_name()}; load average: {os.getloadavg()[0]:.2f}; seed {a.seed} (the base: 0)")
    print(f"\n{'arm':<38}{'blocks':>7}{'mAP50-95':>10}{'ms @' + str(a.imgsz):>10}{'of base':>9}{'spread':>13}"
          f"{'GFLOPs':>8}")
    rows = []
    for (label, w), (ms, ratio, (lo, hi)) in zip(arms.items(), times[1:]):
        row = dict(arm=label, blocks=blocks.get(label, 0), map=map50_95(w, data), ms=ms, ratio=ratio,
                   spread=(lo, hi), gflops=gflops(checkpoint_model(w), a.imgsz))
        rows.append(row)
        print(f"{label:<38}{row['blocks']:>7}{row['map']:>10.4f}{ms:>10.2f}{ratio:>9.3f}{f'{lo:.3f}-{hi:.3f}':>13}"
              f"{row['gflops']:>8.3f}")
    print(f"budget: {1 - cut:.3f} of the base's latency on {name}")
    (out / "depth.json").write_text(json.dumps(rows, indent=1))
    return rows


def alone(a) -> None:
    from common import checkpoint_model

    out = Path(a.out).resolve()
    print(f"{cpu_name()}; load average before: {os.getloadavg()[0]:.2f}")
    print(f"{'model':<14}{'runtime':<13}{'cut':>5}" + "".join(f"{w:>22}" for w in ("interleaved", "in pairs",
                                                                                  "in blocks", "alone")))
    for runtime_name in a.runtimes:
        runtime = runtime_for(runtime_name)
        for yaml in a.models:
            names = [f"{yaml[:-5]}.pt"] + [f"{yaml[:-5]}_{runtime_name}_{c:g}.pt" for c in a.cuts]
            if not all((out / n).exists() for n in names):
                print(f"{yaml[:-5]:<14}{runtime_name:<13}  no budget prunings in {out}; run `budget` there first")
                continue
            runs = runtime.models([checkpoint_model(out / n) for n in names], a.imgsz, 1)
            ways = {"interleaved": [], "in pairs": [], "in blocks": [], "alone": []}
            for _ in range(a.repeats):
                ms = interleaved_ms(runs, rounds=100)
                ways["interleaved"].append([m / ms[0] for m in ms[1:]])
                pairs = [interleaved_ms([runs[0], r], rounds=100) for r in runs[1:]]
                ways["in pairs"].append([p / b for b, p in pairs])
                ms = interleaved_ms(runs, rounds=10, per=10, skip=2)
                ways["in blocks"].append([m / ms[0] for m in ms[1:]])
                ms = [interleaved_ms([r], rounds=100)[0] for r in runs]
                ways["alone"].append([m / ms[0] for m in ms[1:]])
            for i, cut in enumerate(a.cuts):
                cells = []
                for got in ways.values():
                    r = sorted(t[i] for t in got)
                    cells.append(f"{statistics.median(r):.3f} ({r[0]:.3f}-{r[-1]:.3f})")
                print(f"{yaml[:-5]:<14}{runtime_name:<13}{cut:>5.1f}" + "".join(f"{c:>22}" for c in cells), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def plot(rows, path, imgsz, runtime_name) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    kinds = {"prune_by=latency": lambda r: " latency -" in r["arm"],
             "prune_by=flops": lambda r: " flops" in r["arm"],
             "unpruned, and s slimmed to n's latency": lambda r: r["arm"].endswith(("plain", "base", "'s", "teacher",
                                                                                     "(full width)"))}
    for (label, pick), marker in zip(kinds.items(), "os*"):
        sel = sorted((r for r in rows if pick(r)), key=lambda r: r["ms"])
        line = "-" if marker != "*" else ""  # a pruning's cuts joined into a curve; the other models stand alone
        ax.plot([r["ms"] for r in sel], [r["map"] for r in sel], line + marker, label=label)
        for r in sel:  # (labels of the slowest models end at their point, inside the axes)
            right = r["ms"] > 0.8 * max(x["ms"] for x in rows)
            ax.annotate(r["arm"], (r["ms"], r["map"]), fontsize=6, ha="right" if right else "left")
    ax.set_xlabel(f"{runtime_name} CPU latency, ms (batch 1, 1 thread, {imgsz} px)" if " | " not in runtime_name
                  else f"latency on {runtime_name}, ms\n(batch 1, {imgsz} px)", fontsize=8)  # (an agent's identity)
    ax.set_ylabel("mAP50-95 (harder built-in data)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["budget", "accuracy", "depth", "alone"])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                    help="accuracy: the n/s model pairs (the latency and flops arms prune the first family's n)")
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--round", type=int, default=0, help="prune_round (default: auto, measured per model)")
    ap.add_argument("--no-depth", action="store_true", help="budget: prune_depth=False (never remove a block whole)")
    ap.add_argument("--repeats", type=int, default=3, help="budget: timings of every model's variants, 100 rounds "
                                                          "each (the median ratio is printed)")
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0, help="accuracy: ultralytics' seed= of every arm after the bases "
                    "(the bases: 0); other than 0, its runs and files are named with _seed<S>")
    ap.add_argument("--teacher", action="store_true", help="accuracy: also the slimmed s models distilled from their "
                    "base trained on at full width")
    ap.add_argument("--n-only", action="store_true", help="accuracy: only the first family's n base and its latency "
                    "and flops arms (no s model, no plain n)")
    ap.add_argument("--device", default="", help="accuracy: time on the agent at this address (http://host:port) "
                    "instead of the first of --runtimes here")
    ap.add_argument("--out", default="runs/bench_latency")
    a = ap.parse_args()
    torch.set_num_threads(1)
    {"budget": budget, "accuracy": accuracy, "depth": depth, "alone": alone}[a.part](a)


if __name__ == "__main__":
    main()

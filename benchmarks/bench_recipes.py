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
  progressive     : one command ``train(prune=<cut/K> prune_by=flops)`` for all E epochs, and K-1 more prunings of
                    cut/K of the base's GFLOPs each (Taylor scores of the EMA from 32 batches) at epoch ends spread
                    over the first 40 % of the run, in the same run (K = 4; a trainer callback here, not an option)
  pruned first    : ``yolo prune model=base.pt prune=<cut> prune_by=flops data=...`` (Taylor scores from 32 batches),
                    then the pruned checkpoint trained E epochs (one-shot in two commands)
  stepwise        : the same, pruned in 3 steps, each re-scoring (Taylor) the model the previous step left, from 11
                    batches, and removing 1 - (1 - cut) ** (1/3) of its GFLOPs (the cut in all, as many batches)
  ... + teacher   : the same with ``distill_model=<full width>`` (logit distillation) in every training stage

Prints mAP50-95 after the last epoch of each arm, one table. Needs the benchmark-only extra ``pip install
torch-pruning`` for the Torch-Pruning arm (skipped without it). Not a test: about an hour on a 2-core CPU.

    python benchmarks/bench_recipes.py [--data hard|easy] [--cuts 0.5 0.7 0.3] [--base-epochs 20] [--epochs 20]
                                       [--optimizer SGD] [--base PATH [--base-more N]] [--seed 0]
                                       [--arms NAME ...] [--zeros Z ...] [--distill-weight W]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
from pathlib import Path

import common
from bench_vs_torch_pruning import IMGSZ, ultra_arm, ultra_distill_arm, unpruned
from common import checkpoint_model, hard_dataset, map50_95, train

from ultra_prune.slimming import distill
from ultra_prune.engine.report import gflops

SHIPPED_WEIGHT = distill.WEIGHT  # the distillation weight ultra-prune ships (--distill-weight changes distill.WEIGHT)


def one_shot(base, data, out, cut, a, kw, teacher=None):
    """``train(prune=cut, prune_by=flops)`` for all E epochs: the one-command recipe."""
    extra = {"distill_model": str(teacher)} if teacher else {}
    name = f"oneshot{teacher_tag(teacher)}_{cut:g}"
    return train(base, data, out, name, epochs=2 * a.sparse_epochs, prune=cut, prune_by="flops", **extra, **kw)


def teacher_tag(teacher) -> str:
    """The run-name part of a distilled arm: '_teacher', with '_wW' where --distill-weight is not the shipped one."""
    if not teacher:
        return ""
    return "_teacher" + ("" if distill.WEIGHT == SHIPPED_WEIGHT else f"_w{distill.WEIGHT:g}")


def one_run(base, data, out, cut, a, kw, teacher=None, zero=None):
    """``train(sparsity_target=cut, prune_by=flops, prune_at_zero=True)`` for all E epochs (with ``zero``, the
    chosen channels reach zero at that share of the run instead of ``target.SCHEDULE.zero``)."""
    extra = {"distill_model": str(teacher)} if teacher else {}
    name = f"onerun{teacher_tag(teacher)}{f'_zero{zero:g}' if zero else ''}_{cut:g}"
    with zero_at(zero):
        return train(base, data, out, name, epochs=2 * a.sparse_epochs, sparsity_target=cut, prune_by="flops",
                     prune_at_zero=True, **extra, **kw)


@contextlib.contextmanager
def zero_at(zero: float | None):
    """Move the ``sparsity_target`` schedule so the chosen channels reach zero at ``zero`` of the run, its other
    points scaled with it (first choice at zero/4, last at 3*zero/4); None: the schedule as shipped."""
    from unittest import mock

    from ultra_prune.slimming import target

    with mock.patch.object(target, "SCHEDULE", target.Schedule.zero_at(zero)) if zero else contextlib.nullcontext():
        yield


STEPS = 4  # the progressive arm's prunings


def progressive_steps(cut: float, epochs: int, steps: int = STEPS) -> tuple[float, dict]:
    """The progressive arm's schedule: the share the run's own ``prune=`` removes first, and epoch index -> the
    share of the then-current GFLOPs to remove at that epoch's end, so the k-th pruning brings the cut to k/steps
    of ``cut`` (each removes at least its share, so the whole cut is reached)."""
    at = {max(0, round(epochs * 0.4 * j / (steps - 1)) - 1): (cut / steps) / (1 - cut * j / steps)
          for j in range(1, steps)}
    if len(at) < steps - 1:
        raise ValueError(f"{epochs} epochs are too few for {steps} prunings in the first 40 % of the run")
    return cut / steps, at


def progressive(base, data, out, cut, a, kw, teacher=None):
    """``train(prune=cut/K, prune_by=flops)`` for all E epochs, pruning on at ``progressive_steps``' epoch ends."""
    from ultra_prune.train.architecture import replace_pruned, without_criterion
    from ultra_prune.engine.calibrate import taylor_scores
    from ultra_prune.pruning import prune_model
    from ultra_prune.pruning.importance import Taylor

    epochs = 2 * a.sparse_epochs
    first, at = progressive_steps(cut, epochs)

    def prune_on(trainer):
        if trainer.epoch not in at:
            return
        with without_criterion(trainer.ema.ema) as ema:
            scores = taylor_scores(ema, data, IMGSZ, batch=16, device="cpu")
        info = replace_pruned(trainer, lambda m: prune_model(m, at[trainer.epoch], prune_by="flops", imgsz=IMGSZ,
                                                             importance=Taylor(scores)))
        if info is None:
            raise RuntimeError(f"progressive pruning at epoch {trainer.epoch + 1}: model and EMA would differ")
        trainer.run_parts("model_replaced")
        print(f"progressive: pruned {info['removed_channels']} channels after epoch {trainer.epoch + 1}", flush=True)

    extra = {"distill_model": str(teacher)} if teacher else {}
    name = f"progressive{teacher_tag(teacher)}_{cut:g}"
    return train(base, data, out, name, callbacks={"on_train_epoch_end": prune_on}, epochs=epochs, prune=first,
                 prune_by="flops", **extra, **kw)


STEPWISE = 3  # the stepwise arm's prunings


def pruned_first(base, data, out, cut, a, kw):
    """``yolo prune model=base.pt prune=<cut> prune_by=flops data=...`` (``commands.prune.prune``: Taylor scores from 32 batches),
    then the pruned checkpoint trained for all E epochs."""
    from ultra_prune.commands.prune import prune

    pt = out / "pruned" / f"prunedfirst_{cut:g}_0.pt"
    if not (common.REUSE and pt.exists()):
        prune(str(base), prune=cut, prune_by="flops", imgsz=IMGSZ, data=str(data), prune_out=pt, exist_ok=True,
              verbose=False, report_files=False)
    return train_pruned(pt, data, out, a, kw)


def stepwise(base, data, out, cut, a, kw, steps=STEPWISE):
    """``pruned_first`` in ``steps`` prunings, each scoring (Taylor, ``ceil(BATCHES / steps)`` batches) the checkpoint
    the previous one wrote and removing ``1 - (1 - cut) ** (1 / steps)`` of its GFLOPs, as ``commands.prune.prune`` prunes."""
    from ultra_prune.engine.calibrate import BATCHES, taylor_scores
    from ultra_prune.io.checkpoint import load_model, save_model
    from ultra_prune.pruning import prune_model
    from ultra_prune.pruning.importance import Taylor

    src = base
    for i in range(steps):
        pt = out / "pruned" / f"stepwise_{cut:g}_{i}.pt"
        if not (common.REUSE and pt.exists()):
            model, ckpt = load_model(src)
            scores = taylor_scores(model, data, IMGSZ, batch=16, batches=-(-BATCHES // steps))
            pruned, _ = prune_model(model, 1 - (1 - cut) ** (1 / steps), prune_by="flops", imgsz=IMGSZ,
                                    importance=Taylor(scores), depth=True)
            save_model(pruned, pt, ckpt, exist_ok=True)
        src = pt
    return train_pruned(src, data, out, a, kw)


def train_pruned(pt, data, out, a, kw):
    """Print the mAP50-95 of the pruned checkpoint ``pt``, then train it for all E epochs (run named by its arm)."""
    name = pt.stem.rsplit("_", 1)[0]
    print(f"{name}: mAP50-95 {map50_95(pt, data):.3f} right after pruning", flush=True)
    return train(pt, data, out, name, epochs=2 * a.sparse_epochs, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["hard", "easy"], default="hard")
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.5, 0.7, 0.3])
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20, help="epochs of every arm after the base (even)")
    ap.add_argument("--optimizer", default="SGD", help="of every arm after the base (the base trains with SGD)")
    ap.add_argument("--base", help="start from this checkpoint (e.g. another run's base) instead of training one")
    ap.add_argument("--base-more", type=int, default=0,
                    help="with --base: first train it on N more SGD epochs (run 'base' in --out), the base")
    ap.add_argument("--seed", type=int, default=0, help="ultralytics' seed= of every arm after the base (the base: 0)")
    ap.add_argument("--arms", nargs="+", help="only these arms (names as in the table), e.g. 'one-shot' 'one run'")
    ap.add_argument("--zeros", type=float, nargs="+", default=[],
                    help="also the one-run arm with the chosen channels at zero at these shares of the run (e.g. 0.2 "
                         "0.6; the shipped schedule reaches zero at 0.4), as arms 'one run, zero at Z'")
    ap.add_argument("--distill-weight", type=float, default=SHIPPED_WEIGHT,
                    help="the logit distillation's weight in the one-shot, one-run and progressive '+ teacher' arms "
                         "(shipped: %(default)g; their runs are named '..._teacher_wW')")
    ap.add_argument("--out", default="runs/bench_recipes")
    ap.add_argument("--reuse", action="store_true", help="keep runs whose last.pt already exists in --out")
    a = ap.parse_args()
    if a.base_more and not a.base:
        ap.error("--base-more N trains a given --base on; pass --base PATH (or --base-epochs to train a new base)")
    if a.distill_weight != SHIPPED_WEIGHT and "four-step + teacher" in (a.arms or ["four-step + teacher"]):
        ap.error("--distill-weight applies to the one-shot, one-run and progressive teacher arms; pass --arms without "
                 "'four-step + teacher'")
    a.sparse_epochs = a.finetune_epochs = a.epochs // 2
    distill.WEIGHT = a.distill_weight
    out = Path(a.out).resolve()
    common.REUSE = a.reuse
    data = hard_dataset(out / "data") if a.data == "hard" else common.dataset(out / "data")
    kw = dict(optimizer=a.optimizer, imgsz=IMGSZ, seed=a.seed)
    base = Path(a.base) if a.base else train("yolov8n.yaml", data, out, "base", epochs=a.base_epochs,
                                             **{**kw, "optimizer": "SGD", "seed": 0})
    if a.base_more:
        base = train(base, data, out, "base", epochs=a.base_more, **{**kw, "optimizer": "SGD", "seed": 0})
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
                "pruned first": lambda: pruned_first(base, data, out, cut, a, kw),
                "stepwise": lambda: stepwise(base, data, out, cut, a, kw),
                "one run": lambda: one_run(base, data, out, cut, a, kw),
                "one run + teacher": lambda: one_run(base, data, out, cut, a, kw, teacher=full),
                "progressive": lambda: progressive(base, data, out, cut, a, kw),
                "progressive + teacher": lambda: progressive(base, data, out, cut, a, kw, teacher=full)}
        for z in a.zeros:
            arms[f"one run, zero at {z:g}"] = lambda z=z: one_run(base, data, out, cut, a, kw, zero=z)
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
    origin = f"of {a.base_epochs} SGD epochs" if not a.base else a.base + (
        f" trained on {a.base_more} SGD epochs" if a.base_more else "")
    print(f"\n{a.data} built-in data, {IMGSZ} px, yolov8n base {origin} (mAP50-95 {head['base']:.3f}); "
          f"every arm {a.epochs} epochs after it, optimizer={a.optimizer}, seed={a.seed}; full width for as long: "
          f"{head['full width']:.3f}\n")
    print("| GFLOPs cut | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for cut in a.cuts:
        got = {r["arm"]: r for r in rows if r["cut"] == cut}
        print(f"| −{cut:.0%} | " + " | ".join(f"{got[n]['map']:.3f}" if n in got else "-" for n in names) + " |")


if __name__ == "__main__":
    main()

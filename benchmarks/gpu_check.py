"""GPU check: sparse training under CUDA AMP, a short amp=True slimming run, and the latency that pruning buys.

    python benchmarks/gpu_check.py                        # cuda:0; at most about 8 minutes on one H200
    python benchmarks/gpu_check.py --device cuda:1 --budget 300
    python benchmarks/gpu_check.py --device cpu --quick   # smoke run: CUDA rows SKIP, no training

It prints one table and exits 1 if any row FAILs. A SKIP row (with its reason) is not a pass and does not fail.

a. AMP: fp16 autocast and a real ``torch.amp.GradScaler`` drive ``SlimDetectionTrainer``'s own ``build_optimizer`` and
   ``optimizer_step`` (the stock unscale/clip/step/update/EMA included), for each sparsity mode with SGD and AdamW
   (ultralytics makes AdamW fused on CUDA). ``grad``: after unscaling, the γ gradient is exactly the loss gradient
   plus λ·sign(γ), and the loss part is close to the fp32 gradient. ``prox``/``polar``: γ after the step equals an
   fp32 reference, the same optimizer step followed by the proximal map written out here. All: the EMA sees the
   new γ, and a step the scaler skips (an inf planted in a gradient) leaves γ unchanged. On a CPU the same code runs
   as a dry run (fp16 autocast, ``GradScaler('cpu')``; AdamW is not fused there), and the rows SKIP.
b. ``sparsity`` (polar) training, then ``prune=0.5`` with fine-tuning, on the built-in dataset with ``amp=True``
   (2 epochs each, 128 px). Checks that AMP stayed on, the losses are finite, γ shrank, and the pruned model trained.
c. yolov8s (from yaml, random BN scales) against its ``prune=0.5`` version: latency ratio pruned/original next to
   the GFLOPs ratio. PyTorch fp16 at batch 1 and 32, onnxruntime CUDA (if ``onnxruntime-gpu`` is installed) and
   TensorRT fp16 through ultralytics' exporter (if ``tensorrt`` is installed). Batch 32 must be faster.
d. The first CUDA run of every recipe (``gpu_paths.py``): sparsity_target / prune_at_zero under AMP for each
   prune_by (resumed too), logit distillation under AMP, one-shot prune= on NCCL, device arguments, syncs and step
   time against the stock trainer, and prune= → fine-tune → TensorRT fp16.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import ultra_prune  # noqa: E402
from ultra_prune.io.logs import quiet  # noqa: E402

ultra_prune.apply()  # also where the start-up hook is off

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
MODES = ("grad", "prox", "polar")
OPTIMIZERS = ("SGD", "AdamW")
LAM, LR = 0.5, 0.01  # lr*lam = 5e-3: the proximal map zeroes some γ of the random [0, 1) scales below
# Relative L2 distance allowed between the fp16-autocast and the fp32 loss gradient of γ: fp16 rounding through
# yolov8n puts it at 2-10 % (measured on CPU fp16, seeds 0-2); a lost, unscaled or doubly scaled term is >= 100 %.
GRAD_TOL = 0.25
EXACT_TOL = 1e-6  # relative, for what must match up to fp32 rounding


@dataclass
class Row:
    name: str
    status: str
    detail: str


class Budget:
    """Seconds left of the run's time budget."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}"


def guarded(name: str, fn, *args) -> list[Row]:
    """``fn(*args)`` (a list of rows); an exception becomes one FAIL row."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - every failure is a row of the table
        return [Row(name, FAIL, one_line(e))]


@contextlib.contextmanager
def exact_fp32():
    """fp32 matmuls and convolutions really in fp32 (no TF32), for the reference gradients."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# --- models ---------------------------------------------------------------------------------------------------------
def detection_model(cfg: str = "yolov8n.yaml", seed: int = 0) -> nn.Module:
    """A DetectionModel from yaml whose BN scales are seeded uniform in [0, 1) (a non-trivial |γ| ranking)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(cfg, verbose=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g))
    return model


def tensors(out) -> list[torch.Tensor]:
    """Every tensor of a model output (a tensor, or lists/tuples/dicts of them; dicts from ultralytics >= 8.4)."""
    if torch.is_tensor(out):
        return [out]
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else []
    return [t for o in items for t in tensors(o)]


def toy_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return sum(t.float().mean() for t in tensors(model(x)))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- a. AMP ---------------------------------------------------------------------------------------------------------
def amp_trainer(model, mode, optimizer, device, data, project):
    """The real SlimDetectionTrainer (its own __init__), given what ``_setup_train`` and ``_do_train`` would set: the
    model, EMA, an enabled GradScaler, the optimizer from its own ``build_optimizer``, and epoch 0."""
    from ultralytics.utils.torch_utils import ModelEMA

    from ultra_prune.train.trainer import SlimDetectionTrainer

    overrides = dict(model="yolov8n.yaml", data=str(data), epochs=1, imgsz=64, batch=2, workers=0, device=str(device),
                     project=str(project), name=f"amp_{mode}_{optimizer}", exist_ok=True, plots=False, amp=True,
                     optimizer=optimizer, lr0=LR, sparsity=LAM, sparsity_mode=mode, verbose=False)
    t = SlimDetectionTrainer(overrides=overrides)
    t.device, t.model, t.ema, t.epoch = device, model, ModelEMA(model), 0
    t.scaler = torch.amp.GradScaler(device.type, enabled=True)
    t.optimizer = t.build_optimizer(model, name=optimizer, lr=LR, momentum=0.9, decay=5e-4)
    return t


def watch_scaler(scaler, params) -> dict:
    """Record the gradients right after the trainer's ``unscale_`` and right before its ``step`` (after clipping),
    by wrapping the methods of this one GradScaler object."""
    seen = {}
    unscale, step = scaler.unscale_, scaler.step

    def unscale_(optimizer):
        unscale(optimizer)
        seen["unscaled"] = [None if p.grad is None else p.grad.detach().clone() for p in params]

    def step_(optimizer, *a, **k):
        seen["stepped"] = [None if p.grad is None else p.grad.detach().clone() for p in params]
        return step(optimizer, *a, **k)

    scaler.unscale_, scaler.step = unscale_, step_
    return seen


def prox_reference(gamma: torch.Tensor, amount: float, polar: bool) -> torch.Tensor:
    """The proximal map of one BN layer's γ: soft-threshold by ``amount`` (polar: only the entries under the
    layer's mean |γ|, by ``2*amount``)."""
    mag = gamma.float().abs()
    shrink = (mag < mag.mean()).float() * (2 * amount) if polar else amount
    return gamma.float().sign() * (mag - shrink).clamp_min(0)


def twin_step(t, model, state, grads):
    """The same optimizer step on a copy of ``model`` by the stock ``build_optimizer`` (no proximal hook)."""
    from ultra_prune.train.trainer import SlimTrainer

    twin = copy.deepcopy(model)
    opt = super(SlimTrainer, t).build_optimizer(twin, name=t.args.optimizer, lr=LR, momentum=0.9, decay=5e-4)
    opt.load_state_dict(state)
    for p, g in zip(twin.parameters(), grads):
        p.grad = None if g is None else g.clone()
    opt.step()
    lr = {id(p): group["lr"] for group in opt.param_groups for p in group["params"]}
    return twin, lr


def amp_step(t, model, x, seen):
    """One fp16-autocast step through the trainer; None when the scaler skipped it (inf/nan), else what the checks
    compare (``seen``: what ``watch_scaler`` records)."""
    from ultra_prune.slimming.sparsity import batchnorm_params

    gammas, params = batchnorm_params(model)[0], list(model.parameters())
    index = {id(p): i for i, p in enumerate(params)}
    with exact_fp32():
        ref = [g.detach() for g in torch.autograd.grad(toy_loss(model, x), gammas)]
    before = copy.deepcopy(model)
    state = copy.deepcopy(t.optimizer.state_dict())
    ema_before = [g.detach().clone() for g in batchnorm_params(t.ema.ema)[0]]
    t.optimizer.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.float16):
        loss = toy_loss(model, x)
    t.scaler.scale(loss).backward()
    scaled = [g.grad.detach().clone() for g in gammas]
    scale = t.scaler.get_scale()
    t.optimizer_step()
    if t.scaler.get_scale() < scale:
        return None
    d = t.ema.decay(t.ema.updates)
    return dict(gammas=gammas, index=index, ref=ref, before=before, state=state, ema_before=ema_before, d=d,
                scaled=scaled, scale=scale, seen=dict(seen))


def check_grad_mode(s) -> tuple[bool, str]:
    """After unscale: g = scaled/scale + λ·sign(γ) exactly, and g - λ·sign(γ) close to the fp32 gradient."""
    from ultra_prune.slimming.sparsity import batchnorm_params

    old = batchnorm_params(s["before"])[0]
    unscaled = [s["seen"]["unscaled"][s["index"][id(g)]] for g in s["gammas"]]
    term = [LAM * p.detach().sign() for p in old]
    algebra = max(((u - (sc / s["scale"] + tm)).abs().max() / (sc.abs().max() / s["scale"] + LAM)).item()
                  for u, sc, tm in zip(unscaled, s["scaled"], term))
    loss_part = torch.cat([(u - tm).flatten() for u, tm in zip(unscaled, term)])
    ref = torch.cat([r.flatten() for r in s["ref"]])
    fidelity = ((loss_part - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    ok = algebra <= EXACT_TOL and fidelity <= GRAD_TOL
    return ok, (f"after unscale γ-grad = grad/scale + λ·sign(γ) to {algebra:.1e} (≤ {EXACT_TOL:g}); "
                f"loss part vs fp32 grad {fidelity:.1e} (≤ {GRAD_TOL:g}); scale {s['scale']:g}")


def check_prox_mode(t, s, polar) -> tuple[bool, str]:
    """γ after the trainer's step = the proximal map (fp32, written out) of the same step without the hook."""
    from ultra_prune.slimming.sparsity import batchnorm_params

    twin, lr = twin_step(t, s["before"], s["state"], s["seen"]["stepped"])
    plain = batchnorm_params(twin)[0]
    want = [prox_reference(p.detach(), lr[id(p)] * LAM, polar) for p in plain]
    got = [g.detach() for g in s["gammas"]]
    err = max((a - b).abs().max().item() for a, b in zip(got, want))
    moved = sum(int((w != p.detach()).sum()) for w, p in zip(want, plain))
    zeros = sum(int((w == 0).sum()) for w in want)
    ok = err <= EXACT_TOL and moved > 0
    return ok, (f"γ vs fp32 reference step+prox: max |diff| {err:.1e} (≤ {EXACT_TOL:g}); the map moved {moved} γ, "
                f"{zeros} now exactly 0; scale {s['scale']:g}")


def check_ema(t, s) -> tuple[bool, str]:
    """The EMA took the γ the step left (the thresholded ones in prox/polar mode)."""
    from ultra_prune.slimming.sparsity import batchnorm_params

    d = s["d"]
    now = batchnorm_params(t.ema.ema)[0]
    err = max((e - (d * b + (1 - d) * g.detach())).abs().max().item()
              for e, b, g in zip(now, s["ema_before"], s["gammas"]))
    return err <= EXACT_TOL, f"EMA {err:.1e}"


def overflow_step(t, model, x) -> tuple[bool, str]:
    """A step whose gradients overflow (an inf planted in one conv weight's gradient) is skipped by the scaler, and
    γ must stay as it was: no L1 term, no proximal step on a step that did not happen."""
    from ultra_prune.slimming.sparsity import batchnorm_params

    gammas = batchnorm_params(model)[0]
    before = [g.detach().clone() for g in gammas]
    t.optimizer.zero_grad()
    with torch.autocast(x.device.type, dtype=torch.float16):
        loss = toy_loss(model, x)
    t.scaler.scale(loss).backward()
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    conv.weight.grad.view(-1)[0] = float("inf")
    scale = t.scaler.get_scale()
    t.optimizer_step()
    skipped = t.scaler.get_scale() < scale
    moved = max((g.detach() - b).abs().max().item() for g, b in zip(gammas, before))
    if skipped and moved == 0:
        return True, "overflow step skipped, γ unchanged"
    return False, (f"overflow step: skipped={skipped}, yet γ moved by up to {moved:.1e} "
                   "(the sparsity update ran on a step the GradScaler skipped)")


def amp_case(mode, optimizer, device, data, project) -> tuple[bool, str]:
    """One sparsity mode with one optimizer: trainer steps under fp16 autocast until one is not skipped; check it."""
    batch, imgsz = (4, 128) if device.type == "cuda" else (2, 64)
    model = detection_model().to(device).train()
    x = torch.rand(batch, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)
    with quiet():
        t = amp_trainer(model, mode, optimizer, device, data, project)
        seen = watch_scaler(t.scaler, list(model.parameters()))
        skipped = 0
        for _ in range(25):
            s = amp_step(t, model, x, seen)
            if s is not None:
                break
            skipped += 1
        else:
            return False, f"the GradScaler skipped all {skipped} steps (inf/nan in every fp16 backward)"
        ok, detail = check_grad_mode(s) if mode == "grad" else check_prox_mode(t, s, mode == "polar")
        ema_ok, ema = check_ema(t, s)
        skip_ok, overflow = overflow_step(t, model, x)
    fused = " fused" if any(g.get("fused") for g in t.optimizer.param_groups) else ""
    return ok and ema_ok and skip_ok, (f"{detail}; {ema}; {overflow}; {skipped} skipped step(s) before; "
                                       f"{type(t.optimizer).__name__}{fused}")


def amp_rows(device, project) -> list[Row]:
    """a. Every sparsity mode x optimizer under fp16 autocast; on a CPU a dry run whose rows SKIP."""
    from ultra_prune.commands.dataset import make_dataset

    data = make_dataset(project / "amp_data", n_train=4, n_val=2, imgsz=64)
    cuda = device.type == "cuda"
    if not cuda and not hasattr(torch.amp, "GradScaler"):
        return [Row("a. AMP (all modes)", SKIP, "needs CUDA; this torch has no torch.amp.GradScaler for a CPU dry run")]
    rows = []
    for mode in MODES:
        for opt in OPTIMIZERS:
            name = f"a. AMP fp16 {mode:<5} {opt}"
            try:
                ok, detail = amp_case(mode, opt, device, data, project)
            except Exception as e:  # noqa: BLE001
                ok, detail = False, one_line(e)
            if cuda:
                rows.append(Row(name, PASS if ok else FAIL, detail))
            else:
                rows.append(Row(name, SKIP if ok else FAIL, f"needs CUDA; dry run on {device}: {detail}"))
    return rows


# --- b. sparse -> prune -> fine-tune with amp=True ------------------------------------------------------------------
def read_results(run: Path) -> list[dict]:
    import csv

    with open(run / "results.csv") as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


def finite_losses(rows: list[dict]) -> bool:
    return all(math.isfinite(float(v)) for r in rows for k, v in r.items() if "loss" in k)


def train_amp(weights, data, project, name, device, **kw) -> dict:
    """Train with amp=True; return what the trainer had at its start and end (AMP on, scaler scale)."""
    from ultralytics import YOLO

    seen = {}
    model = YOLO(str(weights))
    model.add_callback("on_train_start", lambda tr: seen.update(amp=bool(tr.amp), scaler=tr.scaler.is_enabled()))
    model.add_callback("on_train_end", lambda tr: seen.update(scale=tr.scaler.get_scale()))
    model.train(data=str(data), epochs=2, imgsz=128, batch=32, workers=2, device=str(device), amp=True, plots=False,
                project=str(project), name=name, exist_ok=True, verbose=False, seed=0, **kw)
    return seen


def pipeline(device, project) -> list[Row]:
    from ultra_prune.io.checkpoint import load_model
    from ultra_prune.commands.dataset import make_dataset

    name = "b. sparse→prune→fine-tune amp=True"
    t0 = time.perf_counter()
    data = make_dataset(project / "data", n_train=128, n_val=32, imgsz=128)
    sparse = train_amp("yolov8n.yaml", data, project, "sparse", device, sparsity=2.0, sparsity_mode="polar",
                       optimizer="AdamW", lr0=0.01)
    last = project / "sparse" / "weights" / "last.pt"
    tune = train_amp(last, data, project, "tune", device, prune=0.5, optimizer="AdamW", lr0=0.002)
    problems = [f"{run}: AMP was off (ultralytics' check_amp turned it off: the run was fp32)"
                for run, s in (("sparse", sparse), ("fine-tune", tune)) if not (s.get("amp") and s.get("scaler"))]
    problems += [f"{run}: the loss scale collapsed to {s['scale']:g}"
                 for run, s in (("sparse", sparse), ("fine-tune", tune)) if s.get("scale", 0) < 1]
    rows_s, rows_t = read_results(project / "sparse"), read_results(project / "tune")
    if not (finite_losses(rows_s) and finite_losses(rows_t)):
        problems.append("non-finite losses in results.csv")
    gamma = float(rows_s[-1].get("sparsity/gamma_mean", "nan"))
    if not gamma < 0.999:
        problems.append(f"mean |γ| {gamma} did not shrink from 1.0 in the sparse run")
    full = n_params(load_model(last)[0])
    pruned = n_params(load_model(project / "tune" / "weights" / "pruned.pt")[0])
    trained = n_params(load_model(project / "tune" / "weights" / "last.pt")[0])
    if not pruned == trained < full:
        problems.append(f"params: sparse {full:,}, pruned.pt {pruned:,}, fine-tuned {trained:,}")
    m = float(next((v for k, v in rows_t[-1].items() if k.startswith("metrics/mAP50-95")), "nan"))
    detail = (f"AMP on, final scales {sparse.get('scale', 0):g}/{tune.get('scale', 0):g}; mean |γ| {gamma:.3f}; "
              f"{full:,} → {pruned:,} params; fine-tuned mAP50-95 {m:.3f}; {time.perf_counter() - t0:.0f} s")
    return [Row(name, FAIL, "; ".join(problems)) if problems else Row(name, PASS, detail)]


def pipeline_rows(device, project, quick, budget) -> list[Row]:
    name = "b. sparse→prune→fine-tune amp=True"
    if quick:
        return [Row(name, SKIP, "--quick: no training")]
    if device.type != "cuda":
        return [Row(name, SKIP, f"needs CUDA (ultralytics turns amp off on {device.type})")]
    if budget.left() < 150:
        return [Row(name, SKIP, f"time budget: {budget.left():.0f} s left, about 150 s needed")]
    return guarded(name, pipeline, device, project)


# --- c. latency -----------------------------------------------------------------------------------------------------
def yolov8s_pair():
    """(original, pruned) yolov8s, eval mode, CPU, fp32."""
    from ultra_prune.pruning import prune_model

    model = detection_model("yolov8s.yaml").eval()
    pruned, _ = prune_model(model, 0.5)
    return model, pruned.eval()


def gflops_ratio(model, pruned, imgsz: int) -> float:
    from ultra_prune.engine.report import gflops

    return gflops(pruned, imgsz) / gflops(model, imgsz)


def deployable(model, device, half: bool):
    m = copy.deepcopy(model).fuse(verbose=False).to(device).eval()
    return m.half() if half else m


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def torch_latency(models, device, batch, imgsz, half, runs) -> tuple[list[float], list]:
    """Median seconds per forward of each model, run alternately on the same input; and the first outputs."""
    x = torch.rand(batch, 3, imgsz, imgsz, device=device, dtype=torch.float16 if half else torch.float32)
    outs = [tensors(m(x))[0] for m in models]
    for _ in range(3):
        for m in models:
            m(x)
    times = [[] for _ in models]
    for _ in range(runs):
        for t, m in zip(times, models):
            sync(device)
            t0 = time.perf_counter()
            m(x)
            sync(device)
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], outs


def torch_rows(pair, device) -> list[Row]:
    model, pruned = pair
    cuda = device.type == "cuda"
    imgsz = 640 if cuda else 128
    models = [deployable(m, device, half=cuda) for m in (model, pruned)]
    flops = gflops_ratio(model, pruned, imgsz)
    rows = []
    for batch in (1, 32) if cuda else (1, 2):
        (ta, tb), outs = torch_latency(models, device, batch, imgsz, cuda, runs=50 if cuda else 3)
        ok = outs[0].shape == outs[1].shape and all(torch.isfinite(o).all() for o in outs)
        faster = tb < ta or batch == 1  # batch 1 is launch-bound on a large GPU: reported, not required
        detail = (f"ratio {tb / ta:.2f} ({ta * 1e3:.2f} → {tb * 1e3:.2f} ms), GFLOPs ratio {flops:.2f} @ {imgsz}"
                  + ("" if ok else "; outputs differ in shape or are not finite")
                  + ("" if faster else "; the pruned model is not faster"))
        name = f"c. latency torch {'fp16' if cuda else 'fp32'} b{batch}"
        if cuda:
            rows.append(Row(name, PASS if ok and faster else FAIL, detail))
        else:
            rows.append(Row(name, SKIP if ok else FAIL, f"needs CUDA; dry run on {device}: {detail}"))
    return rows


def export_onnx(model, path: Path, imgsz: int) -> Path:
    import inspect
    import warnings

    m = copy.deepcopy(model).fuse(verbose=False).eval()
    m.model[-1].export = True
    kw = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, torch.zeros(1, 3, imgsz, imgsz), str(path), input_names=["images"],
                          output_names=["output0"], opset_version=17, **kw)
    return path


def ort_latency(paths, device, imgsz, runs) -> list[float]:
    import onnxruntime as ort

    provider = ("CUDAExecutionProvider", {"device_id": device.index or 0})
    sessions = [ort.InferenceSession(str(p), providers=[provider]) for p in paths]
    if any(s.get_providers()[0] != "CUDAExecutionProvider" for s in sessions):
        raise RuntimeError(f"onnxruntime fell back to {sessions[0].get_providers()}")
    x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
    for _ in range(5):
        for s in sessions:
            s.run(None, {"images": x})
    times = [[] for _ in sessions]
    for _ in range(runs):
        for t, s in zip(times, sessions):
            t0 = time.perf_counter()
            s.run(None, {"images": x})
            t.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def ort_rows(pair, device, project, budget) -> list[Row]:
    name = "c. latency onnxruntime CUDA b1"
    if device.type != "cuda":
        return [Row(name, SKIP, f"needs CUDA (device {device})")]
    try:
        import onnxruntime as ort
    except ImportError:
        return [Row(name, SKIP, "onnxruntime is not installed (pip install onnxruntime-gpu)")]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return [Row(name, SKIP, f"onnxruntime has no CUDAExecutionProvider ({ort.get_available_providers()}); "
                                "pip install onnxruntime-gpu")]
    if budget.left() < 60:
        return [Row(name, SKIP, f"time budget: {budget.left():.0f} s left")]
    model, pruned = pair
    try:
        original = export_onnx(model, project / "original.onnx", 640)
        ta = ort_latency([original], device, 640, runs=3)
    except Exception as e:  # noqa: BLE001 - the original does not run either: the environment, not the pruning
        return [Row(name, SKIP, f"the original model does not run on onnxruntime CUDA here: {one_line(e)}")]
    ta, tb = ort_latency([original, export_onnx(pruned, project / "pruned.onnx", 640)], device, 640, runs=50)
    flops = gflops_ratio(model, pruned, 640)
    return [Row(name, PASS, f"ratio {tb / ta:.2f} ({ta * 1e3:.2f} → {tb * 1e3:.2f} ms, fp32), "
                            f"GFLOPs ratio {flops:.2f} @ 640")]


EXPORT = """
import sys
from ultralytics import YOLO
print("ENGINE", YOLO(sys.argv[1]).export(format="engine", half=True, imgsz=640, device=int(sys.argv[2]), verbose=False))
"""


def trt_engine(model, path: Path, device, timeout: float) -> Path:
    """Save ``model`` as a checkpoint and build its TensorRT fp16 engine with ultralytics' own exporter, in a child
    process that the time budget can stop (``subprocess.TimeoutExpired``)."""
    import subprocess

    from ultra_prune.io.checkpoint import save_model

    save_model(model, path, exist_ok=True)
    r = subprocess.run([sys.executable, "-c", EXPORT, str(path), str(device.index or 0)], capture_output=True,
                       text=True, timeout=timeout)
    found = [line[7:] for line in r.stdout.splitlines() if line.startswith("ENGINE ")]
    if r.returncode or not found:
        raise RuntimeError((r.stderr.strip().splitlines() or ["no engine written"])[-1])
    return Path(found[-1])


def engine_latency(engine: Path, device, runs: int) -> float:
    """Median of ultralytics' own 'inference' time (ms) for an engine, on a fixed image."""
    from ultralytics import YOLO

    model = YOLO(str(engine), task="detect")
    img = np.random.default_rng(0).integers(0, 255, (640, 640, 3), dtype=np.uint8)
    times = []
    for i in range(runs + 5):
        r = model.predict(img, imgsz=640, half=True, device=device.index or 0, verbose=False)
        if i >= 5:
            times.append(r[0].speed["inference"])
    return statistics.median(times) / 1e3


def trt_rows(pair, device, project, budget) -> list[Row]:
    import subprocess

    name = "c. latency TensorRT fp16 b1"
    if device.type != "cuda":
        return [Row(name, SKIP, f"needs CUDA (device {device})")]
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return [Row(name, SKIP, "tensorrt is not installed (pip install tensorrt)")]
    if budget.left() < 120:
        return [Row(name, SKIP, f"time budget: {budget.left():.0f} s left, two engine builds need 120 s or more")]
    model, pruned = pair
    each = (budget.left() - 30) / 2  # two builds, then about 30 s of timing
    try:
        original = trt_engine(model, project / "trt" / "original.pt", device, each)
    except subprocess.TimeoutExpired:
        return [Row(name, SKIP, f"time budget: the original engine took over {each:.0f} s to build")]
    except Exception as e:  # noqa: BLE001 - the original does not export either: the environment, not the pruning
        return [Row(name, SKIP, f"ultralytics cannot export the original model to TensorRT here: {one_line(e)}")]
    try:
        small = trt_engine(pruned, project / "trt" / "pruned.pt", device, each)
    except subprocess.TimeoutExpired:
        return [Row(name, SKIP, f"time budget: the pruned engine took over {each:.0f} s to build")]
    with quiet():
        ta, tb = (engine_latency(e, device, runs=50) for e in (original, small))
    flops = gflops_ratio(model, pruned, 640)
    return [Row(name, PASS, f"ratio {tb / ta:.2f} ({ta * 1e3:.2f} → {tb * 1e3:.2f} ms, ultralytics' inference time), "
                            f"GFLOPs ratio {flops:.2f} @ 640")]


def latency_rows(device, project, budget) -> list[Row]:
    """c. yolov8s vs its prune=0.5 version on every runtime that is available."""
    pair = yolov8s_pair()
    if device.type == "cuda":  # as deployed: fastest kernels (training in b. leaves deterministic mode on)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    rows = guarded("c. latency torch", torch_rows, pair, device)
    rows += guarded("c. latency onnxruntime CUDA b1", ort_rows, pair, device, project, budget)
    rows += guarded("c. latency TensorRT fp16 b1", trt_rows, pair, device, project, budget)
    return rows


# --- d. the first CUDA run of every recipe (gpu_paths.py) ----------------------------------------------------------
def first_cuda_run(device, project) -> list[Row]:
    import gpu_paths

    if device.type != "cuda":
        return [Row("d. first CUDA run", SKIP, f"needs CUDA (device {device})")]
    rows = []
    for name, check, args in gpu_paths.checks(project, device):
        try:
            found = check(*args)
        except Exception as e:  # noqa: BLE001 - every failure is a row of the table
            found = [(name, False, one_line(e))]
        rows += [Row(n, SKIP if ok is None else PASS if ok else FAIL, detail) for n, ok, detail in found]
    return rows


# --- the table ------------------------------------------------------------------------------------------------------
def header(device) -> str:
    import ultralytics

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPUs"
    return (f"ultra-prune {ultra_prune.__version__}, ultralytics {ultralytics.__version__}, torch {torch.__version__}, "
            f"python {sys.version.split()[0]}; device {device} ({where})")


def table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = [f"{'check':<{width}}  status  detail", f"{'-' * width}  ------  {'-' * 6}"]
    lines += [f"{r.name:<{width}}  {r.status:<6}  {r.detail}" for r in rows]
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, SKIP)}
    lines.append(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[SKIP]} skipped")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda:0", help="torch device (default cuda:0); 'cpu' for a smoke run")
    ap.add_argument("--quick", action="store_true", help="no training (b. SKIPs): a smoke run")
    ap.add_argument("--budget", type=float, default=440, help="seconds; optional rows SKIP rather than overrun it")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(f"{args.device} requested but torch.cuda.is_available() is False; use --device cpu --quick")
            return 2
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
        torch.zeros(1, device=device)  # CUDA initialised before ultralytics sees the device
    budget = Budget(args.budget)
    print(header(device), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        rows = guarded("a. AMP", amp_rows, device, project)
        rows += pipeline_rows(device, project, args.quick, budget)
        rows += guarded("c. latency", latency_rows, device, project, budget)
        rows += first_cuda_run(device, project)
    print("\n" + table(rows))
    return 1 if any(r.status == FAIL for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

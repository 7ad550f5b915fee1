"""Helpers shared by the benchmark scripts: the generated dataset, quiet training, and evaluation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

import ultra_prune  # noqa: E402

ultra_prune.apply()  # also where the start-up hook is off
from ultra_prune.commands.dataset import make_dataset, make_hard_dataset  # noqa: E402
from ultra_prune.slimming.sparsity import gamma_stats  # noqa: E402


def dataset(root, n_train=256, n_val=64, imgsz=128) -> Path:
    """The built-in shapes dataset (generated once per root)."""
    yaml = Path(root) / "data.yaml"
    return yaml if yaml.exists() else make_dataset(root, n_train=n_train, n_val=n_val, imgsz=imgsz)


def hard_dataset(root, n_train=600, n_val=150, imgsz=128) -> Path:
    """The built-in harder dataset (10 classes, small crowded objects, clutter), generated once per root."""
    yaml = Path(root) / "data.yaml"
    return yaml if yaml.exists() else make_hard_dataset(root, n_train=n_train, n_val=n_val, imgsz=imgsz)


REUSE = False  # a benchmark's --reuse: a run that finished (its last.pt stripped) is not trained again


def train(model, data, project, name, callbacks=None, **kw) -> Path:
    """Train quietly on the CPU (with ``callbacks``, event -> function, added to the model's); return last.pt (with
    REUSE, an existing one as it is)."""
    from ultralytics import YOLO

    last = Path(project) / name / "weights" / "last.pt"
    if REUSE and last.exists() and torch.load(last, map_location="cpu", weights_only=False).get("epoch") == -1:
        return last
    args = dict(imgsz=128, batch=16, workers=0, device="cpu", plots=False, verbose=False, exist_ok=True,
                project=str(project), name=name, amp=False, seed=0, deterministic=True)
    yolo = YOLO(str(model))
    for event, fn in (callbacks or {}).items():
        yolo.add_callback(event, fn)
    yolo.train(data=str(data), **{**args, **kw})
    return last


def budget_parser(doc: str, out: str, sparse: bool = True):
    """The arguments of the at-the-same-GFLOPs benchmarks: data, cuts, epochs (sparse ones when ``sparse``),
    optimizer, output folder, reuse."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=["hard", "easy"], default="hard")
    ap.add_argument("--cuts", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    ap.add_argument("--base-epochs", type=int, default=30)
    if sparse:
        ap.add_argument("--sparse-epochs", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--optimizer", default="SGD")
    ap.add_argument("--out", default=out)
    ap.add_argument("--reuse", action="store_true", help="keep runs whose last.pt already exists in --out")
    return ap


def budget_setup(a, imgsz: int):
    """``(out folder, data.yaml, training kwargs, base last.pt)`` for parsed ``budget_parser`` arguments: the
    dataset made and a yolov8n base trained once per output folder."""
    global REUSE
    out = Path(a.out).resolve()
    REUSE = a.reuse
    data = (hard_dataset if a.data == "hard" else dataset)(out / "data")
    kw = dict(optimizer=a.optimizer, imgsz=imgsz)
    base = out / "base" / "weights" / "last.pt"
    if not base.exists():
        train("yolov8n.yaml", data, out, "base", epochs=a.base_epochs, **kw)
    return out, data, kw, base


def map50_95(weights, data, imgsz=128) -> float:
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        m = YOLO(str(weights)).val(data=str(data), imgsz=imgsz, batch=32, plots=False, verbose=False, project=tmp)
    return float(m.box.map)


def checkpoint_model(weights):
    ck = torch.load(weights, map_location="cpu", weights_only=False)
    return (ck.get("ema") or ck["model"]).float()


def sparsity_of(weights) -> dict:
    return gamma_stats(checkpoint_model(weights))

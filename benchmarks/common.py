"""Helpers shared by the benchmark scripts: the generated dataset, quiet training, and evaluation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")

import ultra_prune  # noqa: E402,F401  (applies the patches)
from ultra_prune.dataset import make_dataset, make_hard_dataset  # noqa: E402
from ultra_prune.sparsity import gamma_stats  # noqa: E402


def dataset(root, n_train=256, n_val=64, imgsz=128) -> Path:
    """The built-in shapes dataset (generated once per root)."""
    yaml = Path(root) / "data.yaml"
    return yaml if yaml.exists() else make_dataset(root, n_train=n_train, n_val=n_val, imgsz=imgsz)


def hard_dataset(root, n_train=600, n_val=150, imgsz=128) -> Path:
    """The built-in harder dataset (10 classes, small crowded objects, clutter), generated once per root."""
    yaml = Path(root) / "data.yaml"
    return yaml if yaml.exists() else make_hard_dataset(root, n_train=n_train, n_val=n_val, imgsz=imgsz)


REUSE = False  # a benchmark's --reuse: a run that finished (its last.pt stripped) is not trained again


def train(model, data, project, name, **kw) -> Path:
    """Train quietly on the CPU; return last.pt (with REUSE, an existing one as it is)."""
    from ultralytics import YOLO

    last = Path(project) / name / "weights" / "last.pt"
    if REUSE and last.exists() and torch.load(last, map_location="cpu", weights_only=False).get("epoch") == -1:
        return last
    args = dict(imgsz=128, batch=16, workers=0, device="cpu", plots=False, verbose=False, exist_ok=True,
                project=str(project), name=name, amp=False, seed=0, deterministic=True)
    YOLO(str(model)).train(data=str(data), **{**args, **kw})
    return last


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

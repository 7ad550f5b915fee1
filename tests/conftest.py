"""Shared fixtures: a tiny generated dataset and small trained checkpoints (no downloads)."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics skips online checks
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(__file__).parent.parent / ".pytest_yolo_cfg"))

import ultra_prune  # noqa: E402

ultra_prune.apply()  # also where the start-up hook is off

IMGSZ = 64
PYTHON = sys.executable


@pytest.fixture(scope="session")
def data_yaml(tmp_path_factory):
    """data.yaml of a 24-train / 8-val image set of 4 shape classes at 64 px."""
    from ultra_prune.commands.dataset import make_dataset

    return make_dataset(tmp_path_factory.mktemp("shapes"), n_train=24, n_val=8, imgsz=IMGSZ)


@pytest.hookimpl(tryfirst=True)  # (before -m selects on the markers)
def pytest_collection_modifyitems(items):
    """A test marked ``timed`` is ``long`` as well: out of the README's command, and in CI only where it runs alone."""
    for item in items:
        if item.get_closest_marker("timed"):
            item.add_marker(pytest.mark.long)


@pytest.fixture(scope="session")
def agent_python() -> str:
    """The python of an onnxruntime agent's own environment (numpy and onnxruntime, no torch)."""
    from agents import agent_env

    return agent_env("onnxruntime")


@pytest.fixture
def running(agent_python):
    """Starts onnxruntime agents (``running(*key=value)`` -> ``agents.Running``); stops them after the test."""
    from agents import Running

    started = []

    def start(*args):
        started.append(Running(agent_python, *args))
        return started[-1]

    yield start
    for a in started:
        a.stop()


@pytest.fixture(scope="module")
def one_thread():
    """Small models at 64-128 px: one thread is as fast, and two stall badly when other jobs share the cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def log():
    """Messages logged by ultralytics' LOGGER (ultra-prune logs through it too), in order."""
    from ultralytics.utils import LOGGER

    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda r: records.append(r.getMessage())
    LOGGER.addHandler(handler)
    yield records
    LOGGER.removeHandler(handler)


def plain_ultralytics_env(**extra) -> dict:
    """The environment of a fresh interpreter that runs ultralytics with ultra-prune switched off.

    ultralytics <= 8.2.63 (no ``ultralytics.utils.patches.torch_load``) cannot load its own checkpoints on
    torch >= 2.6 unless the user sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, as any user of those releases must:
    ultra-prune's own fix is confined to the patched process and never set in the environment.
    """
    from ultralytics.utils import patches

    env = {**os.environ, "YOLO_OFFLINE": "1", "ULTRA_PRUNE_DISABLE": "1", **extra}
    if not hasattr(patches, "torch_load"):
        env.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    return env


# ``python -c PLAIN_CHECK <checkpoint> <data> <project>`` under ``plain_ultralytics_env()``: the checkpoint in plain
# ultralytics (predict, val, ONNX export); prints one JSON line
PLAIN_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ultralytics import YOLO

    path, data, project = sys.argv[1:4]
    assert "ultra_prune" not in sys.modules
    model = YOLO(path)
    params = sum(p.numel() for p in model.model.parameters())
    results = model.predict(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8), imgsz=64,
                            verbose=False)
    metrics = model.val(data=data, imgsz=64, batch=8, plots=False, verbose=False, project=project, name="val")
    onnx = model.export(format="onnx", imgsz=64, verbose=False)
    print(json.dumps({"params": params, "task": model.task, "results": len(results), "fitness": float(metrics.fitness),
                      "onnx": str(onnx), "ultra_prune": [m for m in sys.modules if m.startswith("ultra_prune")]}))
""")


def train_kwargs(project, name, **kw):
    """Small, quiet, deterministic CPU training arguments."""
    args = dict(epochs=1, imgsz=IMGSZ, batch=8, workers=0, device="cpu", plots=False, project=str(project),
                name=name, exist_ok=True, verbose=False, amp=False)
    return {**args, **kw}


@pytest.fixture(scope="session")
def sparse_ckpt(tmp_path_factory, data_yaml):
    """last.pt of a 1-epoch sparse run of yolov8n (from yaml)."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("runs")
    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(project, "sparse", sparsity=1.0))
    return project / "sparse" / "weights" / "last.pt"


@pytest.fixture(scope="session")
def one_shot(tmp_path_factory, sparse_ckpt, data_yaml):
    """The run folder of YOLO(sparse).train(prune=0.5): prune, then fine-tune."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("oneshot")
    YOLO(str(sparse_ckpt)).train(data=str(data_yaml), **train_kwargs(project, "ft", prune=0.5))
    return project / "ft"

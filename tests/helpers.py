"""Helpers the test modules share: models built from yaml with random BatchNorms, output comparisons, the DDP probe,
file-tree snapshots.

No training and no downloads here.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ultra_prune.pruning import analyse, prune_model
from ultra_prune.pruning.importance import gamma_magnitude

IMGSZ = 64


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ckpt_params(path) -> int:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return n_params(ck.get("ema") or ck["model"])


def bn_widths(model):
    return [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def bn_total(model: nn.Module) -> int:
    return sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def n_zero_bn(model: nn.Module) -> int:
    return sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def randomize_bn(model: nn.Module, seed: int = 0, zero_frac: float = 0.0) -> nn.Module:
    """Seeded random BN statistics and affine parameters; ``zero_frac`` of every BN's gammas set to exactly 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=g) + 0.05)
                m.bias.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if zero_frac:
                    m.weight[torch.rand(n, generator=g) < zero_frac] = 0.0
    return model


def shipped(yaml: str) -> bool:
    """Whether the installed ultralytics' own yaml loader finds ``yaml``; older releases (run by CI through
    PYTHONPATH) lack the newer families (yolo11, yolo26, yolov10 before 8.2.38)."""
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(yaml)
    except FileNotFoundError:
        return False
    return True


MODEL_CLASS = {"detect": "DetectionModel", "segment": "SegmentationModel", "pose": "PoseModel", "obb": "OBBModel",
               "classify": "ClassificationModel"}


def build(yaml: str, seed: int = 0, zero_frac: float = 0.0):
    """The model of ``yaml`` (its task's model class), with seeded conv weights and randomised BatchNorms."""
    from ultralytics import __version__
    from ultralytics.nn import tasks

    if not shipped(yaml):
        pytest.skip(f"{yaml} is not shipped with ultralytics {__version__}")
    torch.manual_seed(seed)  # conv weights too
    model = getattr(tasks, MODEL_CLASS[tasks.guess_model_task(yaml)])(yaml, verbose=False)
    return randomize_bn(model, seed, zero_frac).eval()


@functools.lru_cache(maxsize=None)
def base(yaml: str):
    """One copy of each model per test session (never modified: prune_model works on a deep copy)."""
    return build(yaml)


@torch.no_grad()
def run(model: nn.Module, imgsz: int = IMGSZ, seed: int = 1):
    model.eval()
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(seed))
    return model(x)


def out_shapes(out, key=""):
    """Shapes of every tensor of a model output, except the Detect inputs ('feats', whose widths are pruned)."""
    if isinstance(out, torch.Tensor):
        return {key: tuple(out.shape)}
    if isinstance(out, dict):
        items = [(f"{key}.{k}", v) for k, v in out.items() if k != "feats"]
    elif isinstance(out, (list, tuple)):
        items = [(f"{key}[{i}]", v) for i, v in enumerate(out)]
    else:
        return {}
    return {k: s for name, v in items for k, s in out_shapes(v, name).items()}


def tensors(out) -> list[torch.Tensor]:
    """Every tensor of a model output (nested tuples, lists, dicts), in order, except the head's inputs ('feats')."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k, v in out.items() if k != "feats" for t in tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in tensors(v)]
    return []


def check_consistent(model: nn.Module) -> None:
    """Every conv and BN has tensors that agree with its declared sizes, and at least one channel."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            assert m.out_channels >= 1 and m.in_channels >= 1, name
            assert m.in_channels % m.groups == 0, name
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups), name
            assert m.bias is None or m.bias.shape == (m.out_channels,), name
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            assert n >= 1, name
            assert m.weight.shape == m.bias.shape == m.running_mean.shape == m.running_var.shape == (n,), name


@contextlib.contextmanager
def circular_padding(m: nn.Module):
    """Every padded conv of ``m`` pads circularly inside the block: a constant channel then stays constant up to
    the borders, so pruning zero-gamma channels is exact on the whole output (with zero padding it is exact only
    away from the borders, and a few dozen convs move them far into a small image)."""
    padded = [c for c in m.modules() if isinstance(c, nn.Conv2d) and any(c.padding)]
    try:
        for c in padded:
            c.padding_mode = "circular"
        yield m
    finally:
        for c in padded:
            c.padding_mode = "zeros"


@torch.no_grad()
def calibrate(m: nn.Module, imgsz: int = 128) -> nn.Module:
    """Every BatchNorm's running statistics from one train-mode pass over two random images (padded as the
    exactness test runs them)."""
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    momenta = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None  # a cumulative average: exactly this batch's statistics
    with circular_padding(m.train()):
        m(torch.rand(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)))
    for b, momentum in zip(bns, momenta):
        b.momentum = momentum
    return m.eval()


def ddp_probe(trainer_class, overrides: dict, tmp_path) -> tuple[str, str, int]:
    """Generate the DDP worker file of a ``trainer_class(overrides=...)`` as ultralytics does and run it with the
    training replaced by a probe (no launch): ``(trainer class name, target or lambda, model parameters)`` as the
    worker sees them."""
    from ultralytics.utils.dist import generate_ddp_file

    trainer = trainer_class(overrides=overrides)
    if hasattr(trainer, "get_dataset") and not getattr(trainer, "data", None):
        trainer.data = trainer.get_dataset()
    trainer.setup_model()  # what the launching process holds before spawning (>= 8.4.140 pickles it)
    path = generate_ddp_file(trainer)
    try:
        src = open(path).read()
        probe = (
            "import torch; m = trainer.model if isinstance(trainer.model, torch.nn.Module) else "
            "(setattr(trainer, 'data', getattr(trainer, 'data', None) or trainer.get_dataset()), trainer.setup_model(), "
            "trainer.model)[-1]; print('PROBE', type(trainer).__name__, "
            "next(p.target.target if hasattr(p, 'target') else p.l1.lam for p in trainer.parts), "
            "sum(p.numel() for p in m.parameters()))"
        )
        assert "trainer.train()" in src
        worker = tmp_path / "worker.py"
        # one expression, since older releases write ``results = trainer.train()``
        worker.write_text(src.replace("trainer.train()", f"exec({probe!r}, {{'trainer': trainer}})"))
        r = subprocess.run([sys.executable, str(worker)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                           env={**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"})
        assert r.returncode == 0, r.stderr[-3000:]
        found = re.search(r"PROBE (\w+) ([\d.e-]+) (\d+)", r.stdout)
        assert found, r.stdout[-2000:]
        return found.group(1), found.group(2), int(found.group(3))
    finally:
        for p in (path, os.path.splitext(path)[0] + ".pt"):
            if os.path.exists(p):
                os.remove(p)


def zero_share(model: nn.Module) -> float:
    """The share of prunable channels whose gamma is 0 in every BatchNorm of their group."""
    spaces = [s for s in analyse(model).roots() if s.prunable]
    return (torch.cat([gamma_magnitude(s) for s in spaces]) == 0).float().mean().item()


@functools.lru_cache(maxsize=None)
def most_removable(yaml: str, round_to: int, floor: int) -> int:
    """The channels a prune of ``base(yaml)`` removes with every group at its floor."""
    return prune_model(base(yaml), 0.999, round_to, floor)[1]["removed_channels"]


def check_rounding(orig: nn.Module, info: dict, ratio: float, round_to: int, most: float = float("inf")) -> None:
    """The selector's rounding rule: at least ``ratio`` of the prunable channels go (or the ``most`` the floors
    allow), and at most one step (``round_to`` channels of every member of one tie group) more."""
    groups: dict = {}
    for s in analyse(orig).roots():
        if s.prunable:
            groups[s.tie_root()] = groups.get(s.tie_root(), 0) + 1
    goal = ratio * info["prunable_channels"]
    assert min(goal, most) <= info["removed_channels"] < goal + round_to * max(groups.values())


def snapshot(*roots) -> dict:
    """Every path under ``roots``: folders by type, files by size, mtime and sha256."""
    out = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for n in dirnames + filenames:
                p = Path(dirpath, n)
                st = p.lstat()
                if stat.S_ISREG(st.st_mode):
                    out[str(p)] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
                else:
                    out[str(p)] = (stat.S_IFMT(st.st_mode),)
    return out

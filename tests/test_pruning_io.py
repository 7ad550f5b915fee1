"""Pruned checkpoints in the outside world: the report, ``ultra_prune.commands.prune.prune`` on files, ``yolo prune``,
ONNX export, and loading with plain ultralytics (ultra-prune disabled) in a fresh interpreter.

Checkpoints come from ``DetectionModel('yolov8n.yaml')`` with randomised BN scales, written by
``ultra_prune.io.checkpoint.save_model``: no training, no downloads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import PLAIN_CHECK, plain_ultralytics_env
from helpers import n_params
from ultra_prune.commands.prune import prune
from ultra_prune.io.checkpoint import load_model, save_model
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import is_pruned, prune_model

IMGSZ = 64
NC = 4  # the classes of conftest's generated dataset


def random_model(seed: int = 0):
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel("yolov8n.yaml", nc=NC, verbose=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.01)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """An unpruned checkpoint; tests copy it before pruning so each gets its own folder."""
    return save_model(random_model(), tmp_path_factory.mktemp("ckpt") / "x.pt")


@pytest.fixture
def x_pt(ckpt, tmp_path) -> Path:
    return Path(shutil.copy(ckpt, tmp_path / "x.pt"))


@pytest.fixture(scope="module")
def pruned_ckpt(ckpt, tmp_path_factory):
    """(path, parameter count) of ``x_pruned.pt`` written by ``api.prune`` from a checkpoint on disk."""
    src = Path(shutil.copy(ckpt, tmp_path_factory.mktemp("pruned") / "x.pt"))
    model, report = prune(src, prune=0.5, imgsz=IMGSZ, verbose=False)
    return Path(report.output), n_params(model)


def env(**extra) -> dict:
    return {**os.environ, "YOLO_OFFLINE": "1", **extra}


# --- the report -----------------------------------------------------------------------------------------------
def test_report_rows_and_totals():
    model = random_model()
    pruned, report = prune(model, prune=0.5, imgsz=IMGSZ, verbose=False)
    text = report.text()
    assert report.output is None  # a module input writes nothing unless prune_out is given
    assert len(report.layers) == len(model.model)
    rows = [line.split() for line in text.splitlines()]
    for i, t, b, a in report.layers:
        shown = ["-" if n is None else str(n) for n in (b, a)]
        assert [str(i), t, *shown] == rows[1 + i][:4]  # one row per layer, in order, under the header
        assert ("*" in rows[1 + i]) == (a != b)
        assert ("(inner)" in rows[1 + i]) == (i in report.inner)
    changed = [row for row in report.layers if row[3] != row[2]]
    assert changed and all(a < b for _, _, b, a in changed)
    assert report.params == (n_params(model), n_params(pruned))
    assert report.params[1] < report.params[0]
    assert 0 < report.gflops[1] < report.gflops[0]
    assert f"{report.params[0]:,}" in text and f"{report.params[1]:,}" in text
    assert f"GFLOPs @{IMGSZ}" in text and "parameters" in text
    assert f"{report.removed_channels}/{report.prunable_channels}" in text


def test_report_counts_the_inner_channels_of_the_detect_head():
    """Detect outputs a list, not one tensor: its row shows the channels of its inner Conv+BN blocks (pruned too),
    not '0 -> 0'."""
    model = random_model()
    pruned, report = prune(model, prune=0.5, imgsz=IMGSZ, verbose=False)
    head = len(model.model) - 1

    def bn_channels(layer):
        return sum(m.num_features for m in layer.modules() if isinstance(m, nn.BatchNorm2d))

    assert report.inner == [head]
    _, t, b, a = report.layers[head]
    assert t == "Detect" and (b, a) == (bn_channels(model.model[head]), bn_channels(pruned.model[head]))
    assert 0 < a < b
    row = report.text().splitlines()[1 + head].split()
    assert row == [str(head), "Detect", str(b), str(a), "*", "(inner)"]
    assert all(layer[2:4] != [0, 0] for layer in report.layers)


def test_report_save(tmp_path):
    _, report = prune(random_model(), prune=0.3, imgsz=IMGSZ, verbose=False)
    report.save(tmp_path / "r.txt")
    report.save(tmp_path / "r.json")
    assert (tmp_path / "r.txt").read_text().strip() == report.text()
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["params"] == list(report.params) and data["prune"] == 0.3


# --- api.prune on files ---------------------------------------------------------------------------------------
def test_prune_path_writes_stem_pruned(x_pt):
    model, report = prune(x_pt, prune=0.5, imgsz=IMGSZ, verbose=False)
    out = x_pt.with_name("x_pruned.pt")
    assert report.output == str(out) and out.is_file()
    # the report beside the output, and no stray temp files
    assert sorted(p.name for p in x_pt.parent.iterdir()) == ["x.pt", "x_pruned.pt", "x_pruned_report.json",
                                                              "x_pruned_report.txt"]
    loaded, ckpt = load_model(out)
    assert is_pruned(loaded) and ckpt["ultra_prune"] == getattr(model, "ultra_prune")
    assert n_params(loaded) == n_params(model) == report.params[1] < report.params[0]
    assert report.file_mb[1] < report.file_mb[0]


def test_prune_refuses_to_overwrite(x_pt):
    out = x_pt.with_name("x_pruned.pt")
    out.write_bytes(b"precious")
    before = out.stat().st_mtime_ns
    with pytest.raises(UltraPruneError, match="already exists"):
        prune(x_pt, prune=0.5, imgsz=IMGSZ, verbose=False)
    assert out.read_bytes() == b"precious" and out.stat().st_mtime_ns == before
    assert sorted(p.name for p in x_pt.parent.iterdir()) == ["x.pt", "x_pruned.pt"]
    prune(x_pt, prune=0.5, imgsz=IMGSZ, verbose=False, exist_ok=True)  # ...unless asked to
    assert is_pruned(load_model(out)[0])


def test_prune_out(x_pt, tmp_path):
    out = tmp_path / "sub" / "small.pt"
    prune(x_pt, prune=0.5, imgsz=IMGSZ, verbose=False, prune_out=out)
    assert out.is_file() and not x_pt.with_name("x_pruned.pt").exists()


def test_yolo_prune_cli(x_pt):
    yolo = str(Path(sys.executable).parent / "yolo")
    cmd = [yolo, "prune", f"model={x_pt}", "prune=0.5"]
    r = subprocess.run(cmd, cwd=x_pt.parent, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    out = x_pt.with_name("x_pruned.pt")
    assert out.is_file() and is_pruned(load_model(out)[0])
    data = out.read_bytes()
    r = subprocess.run(cmd, cwd=x_pt.parent, env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "already exists" in r.stdout + r.stderr
    assert out.read_bytes() == data


def reads_of(spy, path: Path) -> int:
    """How many torch.load calls a ``mocker.spy(torch, 'load')`` saw for the file at ``path``."""
    def target(call):
        f = call.args[0] if call.args else call.kwargs.get("f")
        return Path(f).resolve() if isinstance(f, (str, os.PathLike)) else None

    return sum(target(c) == path.resolve() for c in spy.call_args_list)


def test_yolo_prune_reads_the_checkpoint_once(x_pt, mocker, monkeypatch):
    """``yolo prune`` (the patched stock entrypoint, in-process) reads its input once and writes the pruned model
    and its report beside it."""
    from ultralytics import cfg

    monkeypatch.chdir(x_pt.parent)
    spy = mocker.spy(torch, "load")
    cfg.entrypoint(debug="yolo prune model=x.pt prune=0.5")
    out = x_pt.with_name("x_pruned.pt")
    assert out.is_file()
    assert reads_of(spy, x_pt) == 1
    assert "channels removed" in x_pt.with_name("x_pruned_report.txt").read_text()
    assert Path(json.loads(x_pt.with_name("x_pruned_report.json").read_text())["output"]).name == out.name
    assert is_pruned(load_model(out)[0]) and n_params(load_model(out)[0]) < n_params(load_model(x_pt)[0])


def test_onnx_export_matches_torch(tmp_path):
    import onnxruntime as ort
    from ultralytics import YOLO

    original = random_model()
    pruned, _ = prune_model(original, 0.5, 8, 8)
    path = save_model(pruned, tmp_path / "p.pt")
    onnx_path = YOLO(str(path)).export(format="onnx", imgsz=IMGSZ, verbose=False)
    reference, _ = load_model(path)  # the fp16-stored weights, as the export saw them
    reference.eval()
    x = torch.rand(1, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(x)[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        assert got.shape == tuple(original.eval()(x)[0].shape)
    for part in (slice(0, 4), slice(4, None)):  # boxes (pixels) and class scores (here ~1e-3), each on its scale
        a, b = got[:, part], want[:, part]
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * np.abs(b).max())


# --- plain ultralytics ----------------------------------------------------------------------------------------
def test_plain_ultralytics_loads_pruned_checkpoint(pruned_ckpt, data_yaml, tmp_path):
    path, params = pruned_ckpt
    r = subprocess.run([sys.executable, "-c", PLAIN_CHECK, str(path), str(data_yaml), str(tmp_path / "runs")],
                       cwd=tmp_path, env=plain_ultralytics_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ultra_prune"] == []
    assert result["params"] == params < n_params(random_model())
    assert result["task"] == "detect" and result["results"] == 1 and 0.0 <= result["fitness"] <= 1.0
    assert Path(result["onnx"]).is_file()


def test_written_checkpoint_has_normal_permissions(tmp_path):
    import os

    from ultra_prune.io.checkpoint import atomic_write

    target = tmp_path / "f.bin"
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_report_onnx_sizes_and_parity_on_request(x_pt, tmp_path, log):
    _, report = prune(x_pt, prune=0.5, prune_onnx=True, imgsz=64, verbose=False)
    before, after = report.onnx_mb
    assert 0 < after < before and report.onnx_parity < 1e-4
    assert "ONNX MB" in report.text()
    # the temporary exports log nothing: no export summaries, no Predict:/Validate: hints at deleted files
    assert not [m for m in log if "Export complete" in m or "Predict:" in m or "Validate:" in m], log
    written = [f"{x_pt.stem}_pruned{end}" for end in (".pt", "_report.txt", "_report.json")]
    assert sorted(p.name for p in x_pt.parent.iterdir()) == sorted([x_pt.name, *written])  # no litter

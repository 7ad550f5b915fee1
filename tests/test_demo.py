"""The one-command pipeline (``ultra-prune demo``), shrunk to one epoch per stage on the tiny dataset."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.long
@pytest.mark.parametrize("recipe, stages", [("oneshot", ["base", "pruned", "fine-tuned"]),
                                            ("classic", ["base", "sparse", "pruned", "fine-tuned"])])
def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path, data_yaml, recipe, stages):
    exe = Path(sys.executable).parent / "ultra-prune"
    out = tmp_path / "demo"
    r = subprocess.run([str(exe), "demo", f"out={out}", f"data={data_yaml}", "epochs=0.05", "imgsz=64", "batch=8",
                        f"recipe={recipe}"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert list(rows) == stages and summary["recipe"] == recipe
    assert rows["pruned"]["params"] == rows["fine-tuned"]["params"] < rows["base"]["params"]
    assert rows["pruned"]["gflops"] < rows["base"]["gflops"] and rows["pruned"]["onnx_mib"] < rows["base"]["onnx_mib"]
    assert rows["pruned"]["gflops"] <= 0.5 * rows["base"]["gflops"] + 1e-6  # prune=0.5 prune_by=flops: half at least
    assert all(r["latency_ms"] > 0 for r in rows.values())
    assert (out / "demo.png").stat().st_size > 20_000
    report = out / ("oneshot/prune_report.txt" if recipe == "oneshot" else "prune_report.txt")
    assert report.read_text().strip()
    assert "fine-tuned" in (out / "summary.txt").read_text()
    assert not (out / "val").exists()  # validation runs in a temporary folder


def test_demo_refuses_an_unknown_recipe(tmp_path):
    exe = Path(sys.executable).parent / "ultra-prune"
    r = subprocess.run([str(exe), "demo", f"out={tmp_path / 'd'}", "recipe=fourstep"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "recipe=fourstep" in r.stderr and "oneshot" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()


def test_demo_refuses_a_non_empty_output_folder(tmp_path):
    exe = Path(sys.executable).parent / "ultra-prune"
    (tmp_path / "keep.txt").write_text("mine")
    r = subprocess.run([str(exe), "demo", f"out={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]

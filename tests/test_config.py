"""The key table: its choices match the pruner's registries, it loads without torch, the README's argument table is
made from it, and the package keeps its layers (``.ci/layers.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ultra_prune.config import docs
from ultra_prune.config.keys import (COMMAND_KEYS, KEYS, LATENCY_PRECISIONS, LATENCY_RUNTIMES, PRUNE_BY, PRUNE_IMPORTANCES,
                                     SHARED)

ROOT = Path(__file__).resolve().parents[1]


def test_choices_are_the_registries():
    from ultra_prune.latency import runtimes
    from ultra_prune.pruning import PRUNE_BY as budgets
    from ultra_prune.pruning.importance import NAMED

    from ultra_prune.latency import agent

    assert PRUNE_BY == budgets and LATENCY_RUNTIMES == runtimes.LATENCY_RUNTIMES
    assert agent.RUNTIMES == tuple(r for r in LATENCY_RUNTIMES if r != "torch")  # what a device runs
    assert agent.PRECISIONS == LATENCY_PRECISIONS
    assert PRUNE_IMPORTANCES == ("auto", "taylor", *NAMED)


def test_every_command_key_is_described():
    assert all(k in KEYS or k in SHARED for k in COMMAND_KEYS["prune"])


def test_the_key_table_loads_without_torch():
    code = ("import sys, ultra_prune.config.keys, ultra_prune.config.docs, ultra_prune.config.settings, "
            "ultra_prune.patches.cfg; print(sorted(m for m in ('torch', 'ultralytics', 'ultra_prune.pruning') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"ULTRA_PRUNE_DISABLE": "1", "PATH": ""})
    assert r.stdout.strip() == "[]", r.stderr[-2000:]


def test_readme_argument_table_is_generated_from_the_keys():
    text = (ROOT / "README.md").read_text()
    if docs.START not in text:
        pytest.skip("the README has no argument-table markers")
    assert docs.with_table(text) == text, "run: python -m ultra_prune.config.docs README.md"
    assert all(f"| `{k}` |" in text for k in KEYS)


def test_the_package_keeps_its_layers():
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "layers.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


class Built(Exception):
    """Raised where a trainer would start training: the arguments' trip is over."""


@pytest.mark.parametrize("face", ["cli", "python"])
def test_a_training_run_validates_its_arguments_once(face, data_yaml, tmp_path, monkeypatch):
    """``yolo train ... prune=0.5 prune_round=16`` (and ``YOLO().train(...)``) validates its arguments once, at
    Model.train's door, and builds the slim trainer with them; a trainer built by other code validates its own."""
    from ultralytics import YOLO
    from ultralytics.cfg import entrypoint

    from ultra_prune.config import keys
    from ultra_prune.train import trainer as trainer_module

    calls, real = [], keys.validate
    counted = lambda args: calls.append(dict(args)) or real(args)  # noqa: E731
    monkeypatch.setattr(keys, "validate", counted)
    monkeypatch.setattr(trainer_module, "validate", counted)

    def built(self, *a, **k):
        raise Built(self.args.prune_round)

    monkeypatch.setattr(trainer_module.SlimTrainer, "train", built, raising=False)
    args = dict(data=str(data_yaml), epochs=1, imgsz=64, batch=8, workers=0, device="cpu", project=str(tmp_path),
                name="run", prune=0.5, prune_round=16)
    with pytest.raises(Built, match="16"):
        if face == "cli":
            entrypoint(debug="yolo train model=yolov8n.yaml " + " ".join(f"{k}={v}" for k, v in args.items()))
        else:
            YOLO("yolov8n.yaml").train(**args)
    assert len(calls) == 1 and calls[0]["prune_round"] == 16
    calls.clear()
    trainer_module.SlimDetectionTrainer(overrides={**args, "model": "yolov8n.yaml"})
    assert len(calls) == 1


@pytest.mark.parametrize("face", ["yolo", "ultra-prune", "model", "python"])
def test_a_pruning_validates_its_arguments_once(face, tmp_path, monkeypatch):
    """``yolo prune``, ``ultra-prune prune``, ``YOLO(...).prune`` and ``prune()`` validate their arguments once: at
    the door, or in the prune command when it is called directly."""
    from helpers import base
    from ultralytics import YOLO
    from ultralytics.cfg import entrypoint

    from ultra_prune.commands import cli
    from ultra_prune.commands import prune as command
    from ultra_prune.config import keys
    from ultra_prune.io.checkpoint import save_model

    src = save_model(base("yolov8n.yaml"), tmp_path / "base.pt")
    calls, real = [], keys.validate
    counted = lambda args: calls.append(dict(args)) or real(args)  # noqa: E731
    monkeypatch.setattr(keys, "validate", counted)
    monkeypatch.setattr(command, "validate", counted)
    args = dict(prune=0.5, prune_round=16, imgsz=64, prune_out=str(tmp_path / "out.pt"))
    if face == "yolo":
        entrypoint(debug=f"yolo prune model={src} " + " ".join(f"{k}={v}" for k, v in args.items()))
    elif face == "ultra-prune":
        assert cli.main(["prune", f"model={src}", *(f"{k}={v}" for k, v in args.items())]) == 0
    elif face == "model":
        YOLO(str(src)).prune(**args)
    else:
        command.prune(str(src), verbose=False, **args)
    assert (tmp_path / "out.pt").exists()
    assert len(calls) == 1 and calls[0]["prune_round"] in (16, "16")

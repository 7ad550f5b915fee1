"""Sparsity progress reaches the experiment loggers: a real TensorBoard run, read back from its event file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import train_kwargs

SCALARS = {"sparsity/target", "sparsity/reached", "sparsity/gamma_mean", "sparsity/gamma<0.01", "sparsity/gamma<0.001"}
EPOCHS = 3


@pytest.mark.slow
@pytest.mark.long
def test_sparsity_scalars_and_histogram_reach_tensorboard(tmp_path, data_yaml):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kwargs = train_kwargs(tmp_path, "tb", data=str(data_yaml), epochs=EPOCHS, sparsity_target=0.5, plots=True)
    code = f"""
        import json
        import ultra_prune
        from ultralytics.utils import SETTINGS
        SETTINGS.update({{"tensorboard": True}})  # this test's own settings dir (YOLO_CONFIG_DIR below)
        from ultralytics import YOLO
        model = YOLO("yolov8n.yaml")
        plots = []
        model.add_callback("on_train_end", lambda t: plots.extend(str(p) for p in t.plots))
        model.train(**{kwargs!r})
        print("PLOTS", json.dumps(plots))
    """
    # ultralytics turns its loggers off under pytest: the run is a plain script in a subprocess
    env = {k: v for k, v in os.environ.items() if k not in {"PYTEST_CURRENT_TEST", "GITHUB_ACTIONS"}}
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "cfg")
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file in {tmp_path / 'tb'}"
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert SCALARS <= tags, sorted(tags)
    for tag in SCALARS:
        assert [e.step for e in acc.Scalars(tag)] == list(range(1, EPOCHS + 1)), tag
    assert acc.Scalars("sparsity/target")[-1].value == pytest.approx(0.5)
    assert acc.Scalars("sparsity/reached")[-1].value >= 0.5
    # ultralytics' own scalars are still logged as before
    assert {"metrics/mAP50-95(B)", "train/box_loss"} <= tags
    plots = json.loads(r.stdout.split("PLOTS", 1)[1])
    assert any(p.endswith("gamma_hist.png") for p in plots), plots

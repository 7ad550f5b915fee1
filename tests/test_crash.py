"""Issue 21: runs killed and resumed, writes killed or failing half-way, bad checkpoints handed to training.

Every run here is a subprocess, so that it can really be killed (SIGKILL: no handler, no ``finally``):

- training: ``tests/ddp_support.py`` is the user's script (``YOLO(model).train(**kwargs)``); its ``hang`` callback
  writes a marker file at a chosen batch and sleeps, and the test kills the process group there;
- writes: a generated ``sitecustomize`` (``ddp_support.install_fault``) makes the temp-file write of the pruned
  checkpoint (or of its report) stop half-way and hang (to be killed) or raise ``OSError(ENOSPC)``;
- the ``yolo`` executable itself for the CLI cases.

(tests/test_errors.py covers ``atomic_write`` killed directly and ``api.prune`` failing mid-write in-process; this file
covers the ``yolo prune`` and ``YOLO(...).prune()`` paths killed for real, a full disk on each, and training.)
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
from pathlib import Path

import ddp_support as ds
import pytest
import torch
from helpers import snapshot
from conftest import IMGSZ, train_kwargs

from ultra_prune.slimming.target import FREEZE, OBSERVE, ZERO

YOLO_BIN = Path(sys.executable).with_name("yolo")
PY = sys.executable
EPOCHS = 4  # 24 images at batch 8: 3 batches an epoch, 12 in all; a batch is 1/12 of the progress
TIMEOUT = 240  # seconds for any one subprocess


# --- helpers -----------------------------------------------------------------------------------------------------------


def read_csv(path) -> list[dict]:
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def target_kwargs(project, name, data, **kw) -> dict:
    """A 4-epoch ``sparsity_target=0.5`` run, an optimizer step per batch, same seed, deterministic."""
    return train_kwargs(project, name, data=str(data), epochs=EPOCHS, sparsity_target=0.5, nbs=8, val=False, seed=0,
                        deterministic=True, **kw)


def assert_prunes_exactly(last: Path, out: Path, chosen_count: int) -> None:
    """Pruning ``last`` (its recorded target) removes exactly the chosen channels, reaches the target (the report
    removes at least half the prunable channels), outputs unchanged."""
    report = ds.assert_prunes_exactly(last, out, chosen_count, IMGSZ)
    assert report.removed_channels >= 0.5 * report.prunable_channels


def choices(log: list[dict]) -> list[dict]:
    return [e for e in log if e["event"] == "choose"]


# --- training runs (module-scoped: several tests read each) ------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_yaml):
    """The reference run, never interrupted: (run folder, its log)."""
    tmp = tmp_path_factory.mktemp("whole")
    env = ds.support_env(tmp, log_file=tmp / "log.jsonl")
    r = ds.train_script(tmp, "yolov8n.yaml", target_kwargs(tmp, "run", data_yaml), env, TIMEOUT, callbacks=["count"])
    assert r.returncode == 0, r.stdout[-4000:]
    return tmp / "run", ds.read_log(tmp / "log.jsonl")


def kill_and_resume(tmp: Path, data_yaml, epoch: int, batch: int) -> dict:
    """SIGKILL a target run at the start of ``batch`` of ``epoch`` (0-based), then ``resume=True`` it."""
    marker = tmp / "marker"
    env = ds.support_env(tmp, log_file=tmp / "killed.jsonl", ULTRA_PRUNE_TEST_HANG=f"{epoch},{batch}",
                         ULTRA_PRUNE_TEST_MARKER=marker)
    cmd = ds.train_script_cmd(tmp, "yolov8n.yaml", target_kwargs(tmp, "run", data_yaml), callbacks=["count", "hang"])
    p = ds.start(cmd, env, tmp)
    ds.kill_at_marker(p, marker, TIMEOUT)
    last = tmp / "run" / "weights" / "last.pt"
    killed = ds.read_log(tmp / "killed.jsonl")
    saved_epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    rows_before = len(read_csv(tmp / "run" / "results.csv"))

    env = ds.support_env(tmp, log_file=tmp / "resumed.jsonl")
    r = ds.train_script(tmp, last, {"resume": True}, env, TIMEOUT, callbacks=["count"])
    return {"run": tmp / "run", "killed": killed, "resumed": ds.read_log(tmp / "resumed.jsonl"), "rc": r.returncode,
            "out": r.stdout, "saved_epoch": saved_epoch, "rows_before": rows_before}


@pytest.fixture(scope="module")
def killed_before_freeze(tmp_path_factory, data_yaml):
    """Killed as batch 0 of epoch 1 starts: progress 0.25, after the first choice (at 2/12) and before FREEZE; last.pt
    is epoch 0's."""
    return kill_and_resume(tmp_path_factory.mktemp("early"), data_yaml, 1, 0)


@pytest.fixture(scope="module")
def killed_after_zero(tmp_path_factory, data_yaml):
    """Killed as batch 1 of epoch 2 starts: progress 0.58, past ZERO; last.pt is epoch 1's (0.5)."""
    return kill_and_resume(tmp_path_factory.mktemp("late"), data_yaml, 2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["killed_before_freeze", "killed_after_zero"])
def test_killed_target_run_resumes_reaches_the_target_and_prunes_exactly(case, request, tmp_path):
    res = request.getfixturevalue(case)
    (hang,) = [e for e in res["killed"] if e["event"] == "hang"]
    if case == "killed_before_freeze":  # killed after the first choice, while it may still move
        assert OBSERVE <= hang["progress"] < FREEZE and hang["chosen"] > 0 and 0 < hang["scale"] < 1
        assert res["saved_epoch"] == 0 and res["rows_before"] == 1
    else:  # killed with the chosen channels already at zero
        assert hang["progress"] > ZERO and hang["scale"] == 0
        assert res["saved_epoch"] == 1 and res["rows_before"] == 2
    assert res["rc"] == 0, res["out"][-4000:]
    assert "Resuming training" in res["out"]
    rows = read_csv(res["run"] / "results.csv")
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    assert float(rows[-1]["sparsity/target"]) == 0.5 and float(rows[-1]["sparsity/reached"]) >= 0.5
    last_choice = choices(res["killed"] + res["resumed"])[-1]  # the choice in force at the end of the run
    assert_prunes_exactly(res["run"] / "weights" / "last.pt", tmp_path / "p.pt", last_choice["count"])


@pytest.mark.slow
def test_uninterrupted_target_run_prunes_exactly(uninterrupted, tmp_path):
    """The reference for the resumed runs: choices at OBSERVE and at the epoch starts before FREEZE."""
    run, log = uninterrupted
    made = [(c["epoch"], c["epoch_start"]) for c in choices(log)]
    assert made == [(0, False), (1, True)]  # progress 2/12 (the first batch past OBSERVE), then 0.25
    assert float(read_csv(run / "results.csv")[-1]["sparsity/reached"]) >= 0.5
    assert_prunes_exactly(run / "weights" / "last.pt", tmp_path / "p.pt", choices(log)[-1]["count"])


@pytest.mark.slow
def test_resumed_run_chooses_the_channels_an_uninterrupted_run_chooses(uninterrupted, killed_before_freeze):
    """Same seed, deterministic: killed at 25 % and resumed from epoch 0's last.pt, the run must end with the very
    channels the uninterrupted run chose (its last choice, at the epoch-1 start, and the zeros of its last.pt).
    (Failed until 4648137, which restores the Taylor scores gathered since the last choice on resume; before, a
    resume before FREEZE re-chose from |gamma|.)"""
    run, log = uninterrupted
    assert killed_before_freeze["rc"] == 0
    res = killed_before_freeze
    assert choices(res["killed"] + res["resumed"])[-1]["digest"] == choices(log)[-1]["digest"]
    assert (ds.zero_channels(ds.load_model(killed_before_freeze["run"] / "weights" / "last.pt"))
            == ds.zero_channels(ds.load_model(run / "weights" / "last.pt")))


# --- prune killed / failing while it writes ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det(tmp_path_factory):
    """An (untrained) yolov8n checkpoint as ultra-prune writes them."""
    from ultralytics.nn.tasks import DetectionModel

    from ultra_prune.io.checkpoint import save_model

    return save_model(DetectionModel("yolov8n.yaml", verbose=False), tmp_path_factory.mktemp("det") / "det.pt")


@pytest.fixture
def ws(tmp_path, det):
    """A working folder (the subprocess's cwd) holding det.pt."""
    d = tmp_path / "ws"
    d.mkdir()
    shutil.copy(det, d / "det.pt")
    return d


PRUNE_CMDS = {
    "cli": [str(YOLO_BIN), "prune", "model=det.pt", "prune=0.5"],
    "model": [PY, "-c", "from ultralytics import YOLO; YOLO('det.pt').prune(prune=0.5)"],
}


@pytest.mark.parametrize("face", PRUNE_CMDS)
def test_prune_killed_while_saving_leaves_no_output(face, ws, tmp_path):
    """SIGKILL half-way through writing the pruned checkpoint: no det_pruned.pt, no report, det.pt untouched; at most
    the half-written hidden temp file remains (a SIGKILL cannot be cleaned up after)."""
    marker = tmp_path / "marker"
    before = snapshot(ws)
    env = ds.support_env(tmp_path, ULTRA_PRUNE_TEST_FAULT="hang_save", ULTRA_PRUNE_TEST_MARKER=marker)
    p = ds.start(PRUNE_CMDS[face], env, ws)
    ds.kill_at_marker(p, marker, TIMEOUT)
    after = snapshot(ws)
    temp = Path(marker.read_text())
    assert temp.parent == ws and re.fullmatch(r"\.det_pruned\.pt\..+\.tmp", temp.name)
    assert str(temp) in after and 0 < after[str(temp)][1]  # it was killed mid-write
    assert after[str(ws / "det.pt")] == before[str(ws / "det.pt")]
    assert set(after) - set(before) == {str(temp)}  # no det_pruned.pt, no det_pruned_report.*


FULL_DISK = r"could not write 'det_pruned\.pt' \(OSError: \[Errno 28\] No space left on device.*\); any file already " \
            r"there is left untouched; free some space or choose another prune_out="

@pytest.mark.parametrize("where", ["checkpoint", "report"])
def test_full_disk_yolo_prune_is_one_line(where, ws, tmp_path):
    """``yolo prune`` on a full disk: exit 2, one ``ERROR`` line naming the file, no traceback, det.pt untouched and no
    partial file (no temp file; a report that could not be written is absent)."""
    before = snapshot(ws)
    fault = {"checkpoint": "enospc_save", "report": "enospc_report"}[where]
    r = ds.run(PRUNE_CMDS["cli"], ds.support_env(tmp_path, ULTRA_PRUNE_TEST_FAULT=fault), ws, TIMEOUT)
    assert "Traceback" not in r.stdout, r.stdout[-3000:]
    assert r.returncode == 2, r.stdout[-3000:]
    errors = [ln for ln in r.stdout.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "ultra-prune:" in errors[0] and "No space left on device" in errors[0], r.stdout
    if where == "checkpoint":
        assert re.search(FULL_DISK, errors[0]), errors[0]
        assert snapshot(ws) == before
    else:
        after = snapshot(ws)
        assert after[str(ws / "det.pt")] == before[str(ws / "det.pt")]
        assert set(after) - set(before) <= {str(ws / "det_pruned.pt")}  # at most the complete checkpoint
        if str(ws / "det_pruned.pt") in after:
            assert ds.load_model(ws / "det_pruned.pt") is not None


@pytest.mark.parametrize("where", ["checkpoint", "report"])
def test_full_disk_model_prune_is_one_line(where, ws, monkeypatch):
    """``YOLO(...).prune()`` on a full disk: one-line UltraPruneError, no partial file, the model object unchanged."""
    from ultralytics import YOLO

    from ultra_prune.errors import UltraPruneError

    monkeypatch.chdir(ws)
    model = YOLO("det.pt")
    n = sum(p.numel() for p in model.model.parameters())
    before = snapshot(ws)
    for obj, name, new in ds.faults({"checkpoint": "enospc_save", "report": "enospc_report"}[where]):
        monkeypatch.setattr(obj, name, new)
    with pytest.raises(UltraPruneError) as e:
        model.prune(prune=0.5, verbose=False)
    msg = str(e.value)
    assert "\n" not in msg and "No space left on device" in msg, msg
    if where == "checkpoint":
        assert re.search(FULL_DISK, msg), msg
        assert snapshot(ws) == before
        assert sum(p.numel() for p in model.model.parameters()) == n
    else:
        assert set(snapshot(ws)) - set(before) <= {str(ws / "det_pruned.pt")}


# --- bad checkpoints handed to training ------------------------------------------------------------------------------------
def truncate(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def assert_one_line_exit_2(r, name: str) -> None:
    text = r.stdout
    assert "Traceback" not in text, text[-3000:]
    assert r.returncode == 2, text[-3000:]
    errors = [ln for ln in text.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and name in errors[0], text[-3000:]


def test_yolo_train_on_a_truncated_pruned_checkpoint(ws, tmp_path, data_yaml):
    from ultra_prune.commands.prune import prune

    prune(str(ws / "det.pt"), prune=0.5, prune_out=tmp_path / "pruned.pt", verbose=False)
    truncate(tmp_path / "pruned.pt", ws / "trunc.pt")
    before = snapshot(ws)
    cmd = [str(YOLO_BIN), "train", "model=trunc.pt", f"data={data_yaml}", "epochs=1", f"imgsz={IMGSZ}", "device=cpu",
           "project=runs", "name=ft"]
    r = ds.run(cmd, ds.support_env(tmp_path), ws, TIMEOUT)
    assert_one_line_exit_2(r, "trunc.pt")
    assert snapshot(ws) == before  # no runs/ folder, trunc.pt untouched


@pytest.mark.slow
def test_yolo_resume_of_a_run_whose_last_pt_is_truncated(uninterrupted, ws, tmp_path):
    run = ws / "run"
    shutil.copytree(uninterrupted[0], run)
    truncate(uninterrupted[0] / "weights" / "last.pt", run / "weights" / "last.pt")
    before = snapshot(ws)
    r = ds.run([str(YOLO_BIN), "train", "resume", "model=run/weights/last.pt"], ds.support_env(tmp_path), ws, TIMEOUT)
    assert_one_line_exit_2(r, "run/weights/last.pt")
    assert snapshot(ws) == before  # results.csv, best.pt, the truncated last.pt: all as they were

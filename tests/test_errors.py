"""Issue 6: bad input never crashes obscurely and never loses data.

Every case must end in one line naming the problem and the fix (an ``UltraPruneError`` from Python; from the ``yolo``
CLI an ``ERROR ❌ ultra-prune: ...`` line, exit 2 and no traceback) and leave the file tree as it was.

Faces: ``api`` = ``ultra_prune.commands.prune.prune``; ``model`` = ``YOLO(x).prune`` / ``YOLO(x).train``; ``cli`` = the patched
``ultralytics.cfg.entrypoint`` (what the ``yolo`` script calls) run in-process with its debug string; ``sub`` = the real
``yolo`` executable in a subprocess (about 4 s each, so only a representative subset).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import snapshot
import torch
from torch import nn

import ultralytics
from ultra_prune.commands.prune import prune as api_prune
from ultra_prune.errors import UltraPruneError

YOLO_BIN = Path(sys.executable).with_name("yolo")
PY = sys.executable


# --- helpers -----------------------------------------------------------------------------------------------------


def one_line(msg: str, pattern: str) -> None:
    assert "\n" not in msg, f"not one line: {msg!r}"
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"


def strip_bn(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            strip_bn(child)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Checkpoints built from yaml (no training): det, rtdetr (a head with no channel rule), fused and no-BN."""
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    from ultra_prune.io.checkpoint import save_model

    d = tmp_path_factory.mktemp("ckpts")
    save_model(DetectionModel("yolov8n.yaml", verbose=False), d / "det.pt")
    save_model(RTDETRDetectionModel("yolov8n-rtdetr.yaml", verbose=False), d / "rtdetr.pt")
    save_model(DetectionModel("yolov8n.yaml", verbose=False).fuse(verbose=False), d / "fused.pt")
    m = DetectionModel("yolov8n.yaml", verbose=False)
    strip_bn(m)
    save_model(m, d / "nobn.pt")
    return d


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """An empty working folder, also the cwd (so a stray runs/ or output would land in it)."""
    d = tmp_path / "ws"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def make_input(kind: str, ws: Path, ckpts: Path) -> str:
    """Create the input checkpoint of ``kind`` in ``ws``; return its name relative to ``ws`` (the cwd)."""
    if kind in {"det", "rtdetr", "fused", "nobn"}:
        shutil.copy(ckpts / f"{kind}.pt", ws / f"{kind}.pt")
        return f"{kind}.pt"
    if kind == "missing":
        return "missing.pt"
    if kind == "directory":
        (ws / "train" / "weights").mkdir(parents=True)
        (ws / "train" / "weights" / "note.txt").write_text("x")
        return "train"
    if kind == "empty":
        (ws / "empty.pt").touch()
        return "empty.pt"
    if kind == "truncated":
        data = (ckpts / "det.pt").read_bytes()
        (ws / "trunc.pt").write_bytes(data[: len(data) // 2])
        return "trunc.pt"
    if kind == "not_torch":
        (ws / "text.pt").write_text("this is not a checkpoint\n" * 10)
        return "text.pt"
    if kind == "not_pt":
        (ws / "notes.txt").write_text("x")
        return "notes.txt"
    raise ValueError(kind)


def cli_args(kv: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in kv.items())


def run_cli_inprocess(args: str, log: list) -> tuple[int, str]:
    """The patched stock entrypoint on ``yolo <args>``: (exit code, the ultra-prune log lines)."""
    from ultralytics import cfg

    assert getattr(cfg.entrypoint, "_ultra_prune", False)
    code = 0
    try:
        cfg.entrypoint(debug="yolo " + " ".join(args.split()))
    except SystemExit as e:
        code = e.code
    return code, "\n".join(m for m in log if "ultra-prune" in m)


def run_yolo(args: str, cwd: Path, expect_rc: int, pattern: str) -> str:
    """The real ``yolo`` executable: exit code, one matching ultra-prune line, no traceback."""
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    env.pop("ULTRA_PRUNE_DISABLE", None)
    r = subprocess.run([str(YOLO_BIN), *args.split()], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    text = r.stdout + r.stderr
    assert r.returncode == expect_rc, text
    assert "Traceback" not in text, text
    lines = [ln for ln in text.splitlines() if "ultra-prune" in ln]
    assert any(re.search(pattern, ln) for ln in lines), text
    if expect_rc:
        assert len([ln for ln in lines if "ERROR" in ln]) == 1, text
    return text


# --- argument cases: prune, prune_round, prune_min, resume ----------------------------------------------------------
ARG_CASES = {
    "prune_zero": ({"prune": 0}, r"'prune=0' removes nothing.*e\.g\. prune=0\.5"),
    "prune_negative": ({"prune": -0.5}, r"'prune=-0\.5' is out of range \(0, 1\).*e\.g\. prune=0\.5"),
    "prune_one": ({"prune": 1}, r"'prune=1' is out of range \(0, 1\).*e\.g\. prune=0\.5"),
    "prune_above_one": ({"prune": 1.5}, r"'prune=1\.5' is out of range \(0, 1\).*e\.g\. prune=0\.5"),
    "prune_not_number": ({"prune": "half"}, r"'prune=half' is not a number.*e\.g\. prune=0\.5"),
    "prune_round_zero": ({"prune": 0.5, "prune_round": 0}, r"'prune_round=0' is out of range \[1, inf\).*prune_round=8"),
    "prune_min_zero": ({"prune": 0.5, "prune_min": 0}, r"'prune_min=0' is out of range \[1, inf\).*prune_min=8"),
    "prune_min_negative": ({"prune": 0.5, "prune_min": -8}, r"'prune_min=-8' is out of range.*prune_min=8"),
    "resume_with_prune": ({"prune": 0.5, "resume": True}, r"'resume' cannot be combined with 'prune'.*drop prune="),
    "latency_runtime_unknown": ({"prune": 0.5, "prune_by": "latency", "latency_runtime": "tflite"},
                                r"'latency_runtime=tflite' is not one of .*latency_runtime=onnxruntime"),
    "latency_batch_zero": ({"prune": 0.5, "prune_by": "latency", "latency_batch": 0},
                           r"'latency_batch=0' is out of range \[1, inf\).*latency_batch=1"),
}


@pytest.mark.parametrize("face", ["api", "model", "cli"])
@pytest.mark.parametrize("case", ARG_CASES)
def test_bad_prune_arguments(case, face, ws, ckpts, log):
    kw, pattern = ARG_CASES[case]
    src = make_input("det", ws, ckpts)
    before = snapshot(ws)
    if face == "cli":
        code, msg = run_cli_inprocess(f"prune model={src} {cli_args(kw)}", log)
        assert code == 2
        one_line(msg, pattern)
    elif face == "api" and "resume" in kw:  # not an argument of the function: Python's own error
        with pytest.raises(TypeError, match="resume"):
            api_prune(src, **kw)
    else:
        with pytest.raises(UltraPruneError) as e:
            if face == "api":
                api_prune(src, **kw)
            else:
                from ultralytics import YOLO

                YOLO(src).prune(**kw)
        one_line(str(e.value), pattern)
    assert snapshot(ws) == before


def test_bad_prune_argument_cli_subprocess(ws, ckpts):
    src = make_input("det", ws, ckpts)
    before = snapshot(ws)
    run_yolo(f"prune model={src} prune=0", ws, 2, ARG_CASES["prune_zero"][1])
    assert snapshot(ws) == before


# --- sparse-training arguments: fail before any run folder -----------------------------------------------------------
SPARSITY_CASES = {
    "sparsity_negative": ({"sparsity": -1}, r"'sparsity=-1' is out of range \[0, inf\).*e\.g\. sparsity=1e-2"),
    "sparsity_not_number": ({"sparsity": "strong"}, r"'sparsity=strong' is not a number.*e\.g\. sparsity=1e-2"),
    "sparsity_beta_negative": ({"sparsity_beta": -0.1}, r"'sparsity_beta=-0\.1' is out of range.*sparsity_beta=1e-3"),
    "decay_zero": ({"sparsity": 0.01, "sparsity_decay": 0}, r"'sparsity_decay=0' is out of range \(0, 1\].*decay=0\.1"),
    "decay_negative": ({"sparsity": 0.01, "sparsity_decay": -0.5}, r"'sparsity_decay=-0\.5' is out of range \(0, 1\]"),
    "decay_above_one": ({"sparsity": 0.01, "sparsity_decay": 1.5}, r"'sparsity_decay=1\.5' is out of range \(0, 1\]"),
    "train_resume_with_prune": ({"prune": 0.5, "resume": True}, r"'resume' cannot be combined with 'prune'"),
}


@pytest.mark.parametrize("face", ["model", "cli"])
@pytest.mark.parametrize("case", SPARSITY_CASES)
def test_bad_training_arguments(case, face, ws, data_yaml, log):
    kw, pattern = SPARSITY_CASES[case]
    dataset = Path(data_yaml).parent
    train = dict(model="yolov8n.yaml", data=str(data_yaml), epochs=1, imgsz=64, batch=8, workers=0, device="cpu",
                 project=str(ws / "runs"), name="bad")
    before = snapshot(ws, dataset)
    if face == "cli":
        code, msg = run_cli_inprocess(f"train {cli_args({**train, **kw})}", log)
        assert code == 2
        one_line(msg, pattern)
    else:
        from ultralytics import YOLO

        with pytest.raises(UltraPruneError) as e:
            YOLO(train.pop("model")).train(**train, **kw)
        one_line(str(e.value), pattern)
    assert snapshot(ws, dataset) == before
    assert not (ws / "runs").exists()


def test_bad_training_argument_cli_subprocess(ws, data_yaml):
    """``yolo train ... sparsity=-1`` fails before a run folder exists (default project runs/ under the cwd)."""
    dataset = Path(data_yaml).parent
    before = snapshot(ws, dataset)
    run_yolo(f"train model=yolov8n.yaml data={data_yaml} epochs=1 imgsz=64 device=cpu project=runs sparsity=-1",
             ws, 2, SPARSITY_CASES["sparsity_negative"][1])
    assert snapshot(ws, dataset) == before
    assert not (ws / "runs").exists()


# --- bad checkpoints -------------------------------------------------------------------------------------------------
INPUT_CASES = {
    "missing": r"checkpoint 'missing\.pt' does not exist; pass model=",
    "directory": r"checkpoint 'train' is a directory; pass the \.pt file inside it",
    "empty": r"checkpoint 'empty\.pt' is empty \(0 bytes\); re-export or re-train it",
    "truncated": r"checkpoint 'trunc\.pt' could not be read \(.+\); it is truncated.*use an intact \.pt",
    "not_torch": r"checkpoint 'text\.pt' could not be read \(.+\); .*not a torch checkpoint; use an intact \.pt",
    "not_pt": r"'notes\.txt' is not a torch checkpoint \(\.pt\); pass the weights file",
}


@pytest.mark.parametrize("face", ["api", "cli"])
@pytest.mark.parametrize("case", INPUT_CASES)
def test_bad_checkpoint(case, face, ws, ckpts, log):
    """(``YOLO(x)`` itself is ultralytics' constructor and fails before ``.prune``; the CLI checks ``model=`` first.)"""
    src = make_input(case, ws, ckpts)
    before = snapshot(ws)
    if face == "cli":
        code, msg = run_cli_inprocess(f"prune model={src} prune=0.5", log)
        assert code == 2
        one_line(msg, INPUT_CASES[case])
    else:
        with pytest.raises(UltraPruneError) as e:
            api_prune(src, prune=0.5)
        one_line(str(e.value), INPUT_CASES[case])
    assert snapshot(ws) == before


@pytest.mark.parametrize("case", ["missing", "truncated"])
def test_bad_checkpoint_cli_subprocess(case, ws, ckpts):
    """No traceback, no download attempt: ``model=`` is checked before ultralytics' ``YOLO()``."""
    src = make_input(case, ws, ckpts)
    before = snapshot(ws)
    text = run_yolo(f"prune model={src} prune=0.5", ws, 2, INPUT_CASES[case])
    assert "github" not in text.lower()
    assert snapshot(ws) == before


def test_prune_cli_without_model(ws, log):
    code, msg = run_cli_inprocess("prune prune=0.5", log)
    assert code == 2
    one_line(msg, r"'model' is missing; pass the checkpoint to prune, e\.g\. yolo prune model=")
    assert snapshot(ws) == {}


# --- models the pruner cannot take -------------------------------------------------------------------------------------
MODEL_CASES = {
    "fused": r"the model is fused .*; load the unfused checkpoint",
    "nobn": r"no BatchNorm2d layers.*network slimming needs a model with Conv\+BN blocks",
    "rtdetr": r"task 'detect' \(RTDETRDetectionModel with a RTDETRDecoder head\) is not supported by the pruner: it "
              r"has no channel rule for RTDETRDecoder; prune a detect, segment, pose, obb or classify model",
}


@pytest.mark.parametrize("face", ["api", "model", "cli"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_unprunable_model(case, face, ws, ckpts, log):
    src = make_input(case, ws, ckpts)
    before = snapshot(ws)
    if face == "cli":
        code, msg = run_cli_inprocess(f"prune model={src} prune=0.5", log)
        assert code == 2
        one_line(msg, MODEL_CASES[case])
    else:
        with pytest.raises(UltraPruneError) as e:
            if face == "api":
                api_prune(src, prune=0.5)
            else:
                from ultralytics import YOLO

                YOLO(src).prune(prune=0.5)
        one_line(str(e.value), MODEL_CASES[case])
    assert snapshot(ws) == before


def test_unprunable_model_in_memory(ws):
    """Modules, not files: a model fused in memory (e.g. after predict) and one without BatchNorm."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    y = YOLO("yolov8n.yaml")
    y.fuse()
    with pytest.raises(UltraPruneError) as e:
        y.prune(prune=0.5, prune_out="out.pt")
    one_line(str(e.value), MODEL_CASES["fused"])
    m = DetectionModel("yolov8n.yaml", verbose=False)
    strip_bn(m)
    with pytest.raises(UltraPruneError) as e:
        api_prune(m, prune=0.5, prune_out="out.pt")
    one_line(str(e.value), MODEL_CASES["nobn"])
    assert snapshot(ws) == {}


def test_unprunable_model_cli_subprocess(ws, ckpts):
    src = make_input("fused", ws, ckpts)
    before = snapshot(ws)
    run_yolo(f"prune model={src} prune=0.5", ws, 2, MODEL_CASES["fused"])
    assert snapshot(ws) == before


# --- nothing to prune: every layer at its floor --------------------------------------------------------------------------
FLOOR = r"nothing to prune: every prunable layer is already at its floor .*no file written.*Lower prune_min="


@pytest.mark.parametrize("face", ["api", "model", "cli"])
def test_nothing_to_prune(face, ws, ckpts, log):
    src = make_input("det", ws, ckpts)
    before = snapshot(ws)
    if face == "api":
        assert api_prune(src, prune=0.5, prune_min=100000) == (None, None)
    elif face == "model":
        from ultralytics import YOLO

        assert YOLO(src).prune(prune=0.5, prune_min=100000) is None
    else:
        code, _ = run_cli_inprocess(f"prune model={src} prune=0.5 prune_min=100000", log)
        assert code == 0
    one_line(next(m for m in log if "nothing to prune" in m), FLOOR)
    assert snapshot(ws) == before


def test_nothing_to_prune_cli_subprocess(ws, ckpts):
    src = make_input("det", ws, ckpts)
    before = snapshot(ws)
    run_yolo(f"prune model={src} prune=0.5 prune_min=100000", ws, 0, FLOOR)
    assert snapshot(ws) == before


# --- outputs: never overwrite, never write into a folder that cannot take it --------------------------------------------
def _output_case(case, ws, mocker):
    """Set up output ``case``; return (prune kwargs, expected message)."""
    if case == "default_exists":
        (ws / "det_pruned.pt").write_bytes(b"precious")
        return {}, r"output 'det_pruned\.pt' already exists and is left untouched; pass another prune_out= or exist_ok"
    if case == "prune_out_exists":
        (ws / "keep.pt").write_bytes(b"precious")
        return {"prune_out": "keep.pt"}, r"output 'keep\.pt' already exists and is left untouched"
    if case == "prune_out_is_directory":
        (ws / "outdir").mkdir()
        return {"prune_out": "outdir", "exist_ok": True}, r"output 'outdir' is a directory; pass a file path"
    if case == "folder_is_a_file":
        (ws / "afile").write_text("x")
        return {"prune_out": "afile/sub/out.pt"}, r"output folder '.*afile/sub' cannot be created: '.*afile' is a file, " \
                                                  r"not a folder; choose a writable prune_out="
    if case == "folder_not_writable":
        (ws / "ro").mkdir()
        real = os.access
        ro = str((ws / "ro").resolve())
        mocker.patch("os.access", side_effect=lambda p, mode, *a, **k: str(Path(p).resolve()) != ro and real(p, mode))
        return {"prune_out": "ro/new/out.pt"}, r"output folder '.*ro' is not writable; choose a writable prune_out="
    raise ValueError(case)


OUTPUT_CASES = ["default_exists", "prune_out_exists", "prune_out_is_directory", "folder_is_a_file", "folder_not_writable"]


@pytest.mark.parametrize("face", ["api", "model", "cli"])
@pytest.mark.parametrize("case", OUTPUT_CASES)
def test_bad_output(case, face, ws, ckpts, log, mocker):
    src = make_input("det", ws, ckpts)
    kw, pattern = _output_case(case, ws, mocker)
    before = snapshot(ws)
    if face == "cli":
        code, msg = run_cli_inprocess(f"prune model={src} prune=0.5 {cli_args(kw)}", log)
        assert code == 2
        one_line(msg, pattern)
    else:
        with pytest.raises(UltraPruneError) as e:
            if face == "api":
                api_prune(src, prune=0.5, **kw)
            else:
                from ultralytics import YOLO

                YOLO(src).prune(prune=0.5, **kw)
        one_line(str(e.value), pattern)
    assert snapshot(ws) == before


def test_bad_output_cli_subprocess(ws, ckpts, mocker):
    src = make_input("det", ws, ckpts)
    _, pattern = _output_case("default_exists", ws, mocker)
    before = snapshot(ws)
    run_yolo(f"prune model={src} prune=0.5", ws, 2, pattern)
    assert snapshot(ws) == before


# --- unsupported ultralytics ---------------------------------------------------------------------------------------------
def test_unsupported_version(mocker):
    from ultra_prune import patches

    mocker.patch.object(ultralytics, "__version__", "7.0.0")
    with pytest.raises(UltraPruneError) as e:
        patches.check_supported(ultralytics)
    one_line(str(e.value), r"ultralytics 7\.0\.0 is not supported .*pip install 'ultralytics>=8\.0\.143,<8\.5'")
    mocker.patch.object(ultralytics, "_ultra_prune_patched", False)  # apply() refuses too, before patching anything
    hook = mocker.patch("ultra_prune.plugins.get_plugin_manager")
    with pytest.raises(UltraPruneError):
        patches.apply()
    hook.assert_not_called()


def test_unsupported_missing_hook_point(monkeypatch):
    from ultralytics.engine.trainer import BaseTrainer

    from ultra_prune import patches

    monkeypatch.delattr(BaseTrainer, "save_metrics")
    with pytest.raises(UltraPruneError) as e:
        patches.check_supported(ultralytics)
    one_line(str(e.value), r"is not supported \(missing \['BaseTrainer\.save_metrics'\]\).*pip install 'ultralytics")


def test_unsupported_layout(mocker):
    from ultra_prune import patches

    mocker.patch.dict(sys.modules, {"ultralytics.models.yolo.detect": None})  # import fails: pre-8.0.136 layout
    with pytest.raises(UltraPruneError) as e:
        patches.check_supported(ultralytics)
    one_line(str(e.value), r"ultralytics .* is not supported \(.*\); ultra-prune supports .*pip install")


# --- the pruned checkpoint is written atomically ----------------------------------------------------------------------
def _partial_then(exc):
    def save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise exc

    return save


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), RuntimeError("PytorchStreamWriter failed"),
                                 KeyboardInterrupt()], ids=["disk_full", "writer_error", "ctrl_c"])
def test_interrupted_write_keeps_old_file(exc, ws, ckpts, mocker):
    """A write that dies mid-way over an existing output (exist_ok=True) leaves it as it was, and no temp file."""
    src = make_input("det", ws, ckpts)
    (ws / "out.pt").write_bytes(b"the previous pruned model")
    before = snapshot(ws)
    mocker.patch("ultra_prune.io.checkpoint.torch.save", side_effect=_partial_then(exc))
    if isinstance(exc, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            api_prune(src, prune=0.5, prune_out="out.pt", exist_ok=True, verbose=False)
    else:
        with pytest.raises(UltraPruneError) as e:
            api_prune(src, prune=0.5, prune_out="out.pt", exist_ok=True, verbose=False)
        one_line(str(e.value), r"could not write 'out\.pt' \(.+\); any file already there is left untouched; "
                               r"free some space or choose another prune_out=")
    assert snapshot(ws) == before


def test_killed_write_keeps_old_file(ws):
    """SIGKILL while the temp file is being written: the destination is never partial (a stray dot-temp may remain)."""
    (ws / "out.pt").write_bytes(b"the previous pruned model")
    before = snapshot(ws)
    script = textwrap.dedent("""
        import sys, time
        from ultra_prune.io.checkpoint import atomic_write
        def write(tmp):
            with open(tmp, "wb") as f:
                f.write(b"half a checkpoint")
                f.flush()
            print("writing", flush=True)
            time.sleep(60)
        atomic_write("out.pt", write)
    """)
    p = subprocess.Popen([PY, "-c", script], cwd=ws, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "writing"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
    after = snapshot(ws)
    assert after[str(ws / "out.pt")] == before[str(ws / "out.pt")]
    assert all(Path(k).name.startswith(".out.pt.") and k.endswith(".tmp") for k in set(after) - set(before))


def test_successful_write_leaves_no_temp(ws, ckpts):
    """Control for the cases above: a real prune writes exactly one new file."""
    src = make_input("det", ws, ckpts)
    before = snapshot(ws)
    pruned, report = api_prune(src, prune=0.5, verbose=False)
    assert pruned is not None and report.output == "det_pruned.pt"
    assert set(snapshot(ws)) - set(before) == {str(ws / f"det_pruned{end}") for end in (".pt", "_report.txt", "_report.json")}
    assert isinstance(torch.load(ws / "det_pruned.pt", weights_only=False)["model"], nn.Module)

"""Issue 10: the fix that lets ultralytics <= 8.2.63 load its checkpoints on torch >= 2.6 is confined to
ultralytics' own loaders: the user's ``torch.load`` keeps torch's safe default, and the environment is untouched.

The fresh-interpreter checks run on the installed ultralytics and on each old release CI unpacks in ``.ul/<version>``
(skipped where absent), with ultra-prune activated by its start-up hook alone, as in a DDP worker or ``yolo``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from ultra_prune.patches import compat

ROOT = Path(__file__).resolve().parent.parent
VAR = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
SAFE_DEFAULT = tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 6)  # weights_only=True default
OLD = ("8.0.239", "8.1.47", "8.2.18")  # all without ultralytics.utils.patches.torch_load


@pytest.fixture(scope="module")
def module_file(tmp_path_factory) -> Path:
    """A file that pickles a module: torch >= 2.6 refuses it unless weights_only=False."""
    path = tmp_path_factory.mktemp("pickles") / "module.pt"
    torch.save(nn.Linear(2, 2), path)
    return path


# --- in-process -----------------------------------------------------------------------------------------------------
def test_checkpoint_torch_forwards_everything_but_load(module_file):
    proxy = compat.CheckpointTorch(torch)
    assert proxy.nn is torch.nn and proxy.float16 is torch.float16 and proxy.__version__ == torch.__version__
    assert torch.equal(proxy.zeros(2), torch.zeros(2))
    assert isinstance(proxy.load(module_file), nn.Linear)  # weights_only=False by default
    if SAFE_DEFAULT:
        with pytest.raises(Exception, match="[Ww]eights only load failed"):
            proxy.load(module_file, weights_only=True)  # an explicit choice is kept
    with pytest.raises(AttributeError):
        proxy.load = None  # would shadow torch's for that module only, silently: refused
    assert not isinstance(torch.load, compat.CheckpointTorch)


def test_confinement_reaches_only_the_listed_modules(module_file, monkeypatch):
    """A module of the list loads pickled modules; torch.load elsewhere still refuses; running again changes nothing."""
    loader = types.ModuleType("fake_ultralytics_loader")
    loader.torch = torch
    exec("def read(f):\n    return torch.load(f, map_location='cpu')", loader.__dict__)
    monkeypatch.setitem(sys.modules, loader.__name__, loader)
    monkeypatch.setattr(compat, "CHECKPOINT_LOADERS", (loader.__name__, "ultralytics.no_such_module"))
    monkeypatch.delenv(VAR, raising=False)
    original_load = torch.load

    assert compat.confine_full_loads() == [loader.__name__]
    assert compat.confine_full_loads() == []  # idempotent
    assert isinstance(loader.torch, compat.CheckpointTorch) and torch.load is original_load
    assert isinstance(loader.read(module_file), nn.Linear)
    assert VAR not in os.environ
    if SAFE_DEFAULT:
        with pytest.raises(Exception, match="[Ww]eights only load failed"):
            torch.load(module_file)


def test_installed_ultralytics_is_confined_where_needed():
    """In this process (conftest imported ultra_prune): old releases get the proxies, newer ones nothing."""
    import importlib

    from ultralytics.utils import patches

    needed = not hasattr(patches, "torch_load")
    for name in compat.CHECKPOINT_LOADERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        assert isinstance(getattr(module, "torch", None), compat.CheckpointTorch) == needed, name


# --- fresh interpreters -------------------------------------------------------------------------------------------
PROBE = textwrap.dedent(r"""
    import copy, json, os, re, sys, tempfile
    from pathlib import Path

    import torch
    from torch import nn

    import ultralytics
    from ultralytics import YOLO
    from ultralytics.nn import tasks
    from ultralytics.utils import patches, torch_utils

    var = sys.argv[1]
    out = {"version": ultralytics.__version__, "file": ultralytics.__file__, "env": os.environ.get(var),
           "patched": getattr(ultralytics, "_ultra_prune_patched", False), "needed": not hasattr(patches, "torch_load"),
           "ultra_prune_loaded": "ultra_prune" in sys.modules}
    d = Path(tempfile.mkdtemp())
    model = tasks.DetectionModel("yolov8n.yaml", verbose=False)
    out["params"] = sum(p.numel() for p in model.parameters())

    # last.pt as the trainer writes it: pickled modules, an optimizer state; then the release's own loaders
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    last = d / "last.pt"
    torch.save({"epoch": 0, "best_fitness": None, "model": copy.deepcopy(model).half(),
                "ema": copy.deepcopy(model).half(), "updates": 1, "optimizer": opt.state_dict(), "train_args": {},
                "date": None, "version": ultralytics.__version__}, last)
    load = getattr(tasks, "load_checkpoint", None) or tasks.attempt_load_one_weight
    out["torch_safe_load"] = type(tasks.torch_safe_load(str(last))[0]["ema"]).__name__
    m, ckpt = load(str(last))
    out["loader_params"] = sum(p.numel() for p in m.parameters())
    out["yolo_params"] = sum(p.numel() for p in YOLO(str(last)).model.parameters())
    torch_utils.strip_optimizer(str(last))
    out["stripped_optimizer"] = load(str(last))[1]["optimizer"]

    # the user's own load of an untrusted file
    torch.save(nn.Linear(2, 2), d / "untrusted.pt")
    try:
        torch.load(d / "untrusted.pt")
        out["plain_load"] = "allowed"
    except Exception as e:
        out["plain_load"] = "refused" if "eights only load failed" in str(e) else f"{type(e).__name__}: {e}"

    # every module of this release that calls torch.load, and the torch it sees
    root = Path(ultralytics.__file__).parent
    calls = {}
    for f in sorted(root.rglob("*.py")):
        if any(re.match(r"\s*[^#\s].*\btorch\.load\(", line) for line in f.read_text(errors="ignore").splitlines()):
            name = ".".join(f.relative_to(root.parent).with_suffix("").parts)
            try:
                module = __import__(name, fromlist=["_"])
            except Exception as e:
                calls[name] = f"import failed: {type(e).__name__}"
                continue
            calls[name] = type(getattr(module, "torch", None)).__name__
    out["torch_load_callers"] = calls
    print("PROBE " + json.dumps(out))
""")


def shadow_path(version: str | None) -> str | None:
    """PYTHONPATH entry of ``.ul/<version>`` (None: the ultralytics this test run uses); skip if not unpacked."""
    if version is None:
        return None
    path = ROOT / ".ul" / version
    if not (path / "ultralytics").is_dir():
        pytest.skip(f"ultralytics {version} is not unpacked in {path} (.ci/run setup does it)")
    return str(path)


def probe(version: str | None, user_choice: str | None, tmp_path) -> dict:
    """Run PROBE in a fresh interpreter on ``version`` with the user's ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``."""
    env = {k: v for k, v in os.environ.items() if k not in {VAR, "ULTRA_PRUNE_DISABLE"}}
    env.update(YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "cfg"))
    if user_choice is not None:
        env[VAR] = user_choice
    shadow = shadow_path(version)
    if shadow:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shadow, os.environ.get("PYTHONPATH", "")) if p)
    r = subprocess.run([sys.executable, "-c", PROBE, VAR], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    out = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert version is None or out["version"] == version, out
    return out


def check_probe(out: dict, user_choice: str | None) -> None:
    assert out["patched"] and out["ultra_prune_loaded"]  # by the start-up hook: PROBE never imports it
    assert out["env"] == user_choice  # never set, never changed
    n = out["params"]
    assert out["torch_safe_load"] == "DetectionModel" and out["loader_params"] == out["yolo_params"] == n
    assert out["stripped_optimizer"] is None
    if SAFE_DEFAULT:
        assert out["plain_load"] == ("allowed" if user_choice == "1" else "refused"), out["plain_load"]
    if out["needed"]:
        callers = out["torch_load_callers"]
        assert callers and set(callers) <= set(compat.CHECKPOINT_LOADERS), callers
        assert set(callers.values()) == {"CheckpointTorch"}, callers


@pytest.mark.parametrize("version", [None, *OLD], ids=["installed", *OLD])
def test_fresh_interpreter_loads_checkpoints_but_not_untrusted_files(version, tmp_path):
    check_probe(probe(version, None, tmp_path), None)


@pytest.mark.parametrize("choice", ["1", "0"])
def test_users_own_setting_is_kept(choice, tmp_path):
    """``=1``: the user opted into full loads everywhere, and gets them; ``=0``: safe loads, ultralytics still works
    (on the ultralytics this suite runs: CI runs it on the newest and on 8.2.18)."""
    check_probe(probe(None, choice, tmp_path), choice)

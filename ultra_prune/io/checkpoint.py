"""Reading and writing checkpoints safely: clear errors for bad files, atomic writes, no overwrites."""

from __future__ import annotations

import copy
import os
import tempfile
from datetime import datetime
from pathlib import Path

import torch

from ultra_prune.errors import UltraPruneError
from ultra_prune.patches.versions import checkpoint_loader
from ultra_prune.pruning.record import MARKER

# An attribute the slim trainer puts on the EMA it saves (its parts' state, to resume exactly); never written into a
# pruned checkpoint.
TRAINING_STATE = "ultra_prune_training"


def check_input(path) -> Path:
    """Raise UltraPruneError unless ``path`` is an existing, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise UltraPruneError(f"checkpoint '{p}' does not exist; pass model=<path to a .pt from training>")
    if p.is_dir():
        raise UltraPruneError(f"checkpoint '{p}' is a directory; pass the .pt file inside it, e.g. {p}/weights/best.pt")
    if p.stat().st_size == 0:
        raise UltraPruneError(f"checkpoint '{p}' is empty (0 bytes); re-export or re-train it")
    return p


def load_model(path):
    """Load the detection model of an ultralytics checkpoint at ``path`` (unfused, fp32) and the checkpoint dict."""
    p = check_input(path)
    if p.suffix not in {".pt", ".pth"}:
        raise UltraPruneError(f"'{p}' is not a torch checkpoint (.pt); pass the weights file of a training run")
    try:
        model, ckpt = checkpoint_loader()(str(p), device="cpu", fuse=False)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise UltraPruneError(
            f"checkpoint '{p}' could not be read ({_root_cause(e)}); "
            "it is truncated, corrupted or not a torch checkpoint; use an intact .pt from training"
        ) from None
    if not isinstance(model, torch.nn.Module):
        raise UltraPruneError(f"checkpoint '{p}' holds no model; use the .pt of a training run")
    return model.float(), ckpt


def _root_cause(e: BaseException) -> str:
    """``Type: first line`` of the innermost cause of ``e`` (ultralytics wraps torch's error in its own)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    text = " ".join(str(e).split())  # one line
    return f"{type(e).__name__}: {text[:100]}{'...' if len(text) > 100 else ''}" if text else type(e).__name__


def check_output(path, exist_ok: bool = False) -> Path:
    """Raise UltraPruneError if ``path`` exists (and not ``exist_ok``) or its folder is not writable."""
    p = Path(path)
    if p.is_dir():
        raise UltraPruneError(f"output '{p}' is a directory; pass a file path, e.g. prune_out={p / 'pruned.pt'}")
    if (p.exists() or p.is_symlink()) and not exist_ok:
        raise UltraPruneError(f"output '{p}' already exists and is left untouched; pass another prune_out= or exist_ok=True")
    folder = p.absolute().parent
    existing = folder  # nothing is created here: the missing folders are made by save_model, right before writing
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == folder else f"cannot be created: '{existing}' is a file"
        raise UltraPruneError(f"output folder '{folder}' {where}, not a folder; choose a writable prune_out=")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UltraPruneError(f"output folder '{existing}' is not writable; choose a writable prune_out=")
    return p


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file in the same folder, then rename it onto ``path``.

    A process killed mid-write leaves ``path`` as it was (and at worst a stray ``.tmp`` file).
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(model, path, ckpt: dict | None = None, exist_ok: bool = False) -> Path:
    """Write ``model`` as an ultralytics checkpoint (fp16 like ultralytics' own), atomically, never overwriting
    unless ``exist_ok``. ``train_args`` and other metadata of the source ``ckpt`` are carried over."""
    from ultralytics import __version__

    p = check_output(path, exist_ok)
    ckpt = {k: v for k, v in (ckpt or {}).items() if k in {"train_args", "train_metrics", "license", "docs"}}
    m = copy.deepcopy(model).half()
    if hasattr(m, TRAINING_STATE):
        delattr(m, TRAINING_STATE)
    for q in m.parameters():
        q.requires_grad_(False)
    ckpt.update(
        epoch=-1, best_fitness=None, model=m, ema=None, updates=None, optimizer=None,
        date=datetime.now().isoformat(), version=__version__, **{MARKER: getattr(model, MARKER, None)},
    )
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(p, lambda tmp: torch.save(ckpt, tmp))
    except (OSError, RuntimeError) as e:  # disk full, quota, permissions (torch's zip writer raises RuntimeError)
        raise UltraPruneError(
            f"could not write '{p}' ({_root_cause(e)}); any file already there is left untouched; "
            "free some space or choose another prune_out="
        ) from None
    return p

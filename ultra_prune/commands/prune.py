"""The prune command behind ``YOLO(...).prune()``, ``yolo prune`` and ``ultra-prune prune``: a checkpoint (or a
model) in, the engine's pruning, the pruned checkpoint and its report files out."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ultra_prune.config.keys import checked_already, validate
from ultra_prune.config.settings import PruneConfig
from ultra_prune.engine.once import announce, log_info, prune_once
from ultra_prune.errors import UltraPruneError
from ultra_prune.io.checkpoint import check_input, check_output, load_model, save_model
from ultra_prune.io.logs import quiet
from ultra_prune.pruning.record import history


def default_output(path) -> Path:
    """``sparse.pt`` -> ``sparse_pruned.pt`` in the same folder."""
    p = Path(path)
    return p.with_name(f"{p.stem}_pruned{p.suffix or '.pt'}")


def check_ratio(prune) -> None:
    """Raise UltraPruneError unless ``prune`` is a share to remove (stricter than training: it is required, and 0,
    'off' for training, removes nothing); its range is the key table's (``validate``)."""
    if prune is None:
        raise UltraPruneError("'prune' is missing; give the fraction of channels to remove, e.g. prune=0.5 "
                              "(a checkpoint trained with sparsity_target= records its own)")
    if isinstance(prune, bool):
        raise UltraPruneError(f"'prune={prune}' is not a number; use e.g. prune=0.5")
    if isinstance(prune, (int, float)) and prune == 0:  # validate() lets 0 through: it means 'off' for training
        raise UltraPruneError("'prune=0' removes nothing; give the fraction of channels to remove in (0, 1), e.g. prune=0.5")


def _accuracy(weights, data, imgsz, batch) -> tuple[str, float]:
    """``(metric name, value)`` of ``weights`` validated on ``data``: box mAP50-95, or top-1 for classify."""
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        metrics = YOLO(str(weights)).val(data=data, imgsz=imgsz, batch=batch, plots=False, verbose=False,
                                         project=tmp, name="val")
    return ("mAP50-95", float(metrics.box.map)) if hasattr(metrics, "box") else ("top-1", float(metrics.top1))


def onnx_size_and_parity(before, after, imgsz) -> tuple[tuple[float, float], float]:
    """Export both checkpoints to ONNX in a temporary folder; return (MB before, MB after) and the largest
    |onnxruntime - torch| difference of the pruned model's output on a random image (relative to its scale)."""
    import shutil

    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    sizes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, weights in enumerate((before, after)):
            local = Path(tmp) / f"m{i}.pt"
            shutil.copyfile(weights, local)
            with quiet():
                onnx = YOLO(str(local)).export(format="onnx", imgsz=imgsz, verbose=False)
            sizes.append(Path(onnx).stat().st_size / 1e6)
        x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
        sess = ort.InferenceSession(str(Path(tmp) / "m1.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        model = YOLO(str(Path(tmp) / "m1.pt")).model.float().eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    return (sizes[0], sizes[1]), float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def recorded_target(ckpt: dict) -> tuple[float, float] | None:
    """``(sparsity_target, progress)`` of the run a checkpoint comes from: its target and how far the run had got
    (1.0 for a finished run's checkpoint); None if it is not from a ``sparsity_target`` run."""
    args = ckpt.get("train_args") or {}
    if not args.get("sparsity_target"):
        return None
    epoch, epochs = ckpt.get("epoch", -1), args.get("epochs") or 1
    progress = 1.0 if epoch is None or epoch < 0 else min((epoch + 1) / epochs, 1.0)
    return args["sparsity_target"], progress


def removed_in_run(model) -> bool:
    """Whether ``model`` comes from a ``prune_at_zero`` run that removed its zeroed channels itself."""
    steps = history(model)
    return bool(steps) and steps[-1].removed_in_run


def open_input(model, prune_out, exist_ok: bool):
    """``(model, checkpoint dict, source path, output path)`` of the command's input: a checkpoint path is checked
    and loaded (input errors first: they are the ones to fix first), after its output path is checked."""
    source = Path(model) if isinstance(model, (str, Path)) else None
    if source is not None:
        check_input(source)
    out = Path(prune_out) if prune_out else (default_output(source) if source else None)
    if out is not None:
        check_output(out, exist_ok)
    model, ckpt = load_model(source) if source is not None else (model, {})
    return model, ckpt, source, out


def prune(model, prune: float | None = None, prune_round: int | None = None, prune_min: int | None = None,
          prune_out=None, exist_ok: bool = False, data=None, imgsz: int | None = None, batch: int = 16,
          prune_onnx: bool = False, verbose: bool = True, prune_by: str | None = None,
          prune_importance: str | None = None, device=None, report_files: bool = True,
          latency_runtime: str | None = None, latency_batch: int | None = None, prune_depth: bool | None = None,
          latency_precision: str | None = None, latency_device: str | None = None, latency_table: str | None = None):
    """Prune ``model`` (a checkpoint path or an ultralytics model) and return ``(pruned_model, report)``.

    ``prune`` is the share of prunable channels to remove (``prune_by='channels'``), of GFLOPs at ``imgsz``
    (``'flops'``; by default the checkpoint's training imgsz, else 640) or of latency measured on ``latency_runtime``
    at ``imgsz`` and batch ``latency_batch`` (``'latency'``; see ``ultra_prune.latency.table``), least important first
    (``latency_device``/``latency_table``: on the device, see ``latency.remote``) (``prune_importance``: by default first-order Taylor scores from ``data`` when given, else BN |gamma|); where
    every layer at its floor still misses a GFLOPs or latency share, whole residual blocks go too (``prune_depth``,
    default on). Without ``prune``, a checkpoint of a ``sparsity_target`` run is pruned as that run recorded it
    (target, floors, ``imgsz``): exactly the channels it drove to zero are removed, with a warning when they fall
    short of its target.

    A path input writes ``<stem>_pruned.pt`` beside it (or ``prune_out``), atomically and never over an existing
    file unless ``exist_ok``, and (``report_files``) ``<output stem>_report.txt`` / ``.json`` beside that. A module
    input is written only when ``prune_out`` is given. With ``data`` the report also holds mAP50-95 before/after,
    with ``prune_onnx`` ONNX sizes and onnxruntime parity, under ``prune_by='latency'`` the predicted and measured
    latency before/after. When nothing can be removed nothing is written and
    ``pruned_model`` is None.
    """
    from ultralytics.utils import colorstr

    given = {"prune_by": prune_by, "prune_importance": prune_importance, "prune_round": prune_round,
             "prune_min": prune_min, "imgsz": imgsz, "latency_runtime": latency_runtime, "latency_batch": latency_batch,
             "prune_depth": prune_depth, "latency_precision": latency_precision, "latency_device": latency_device,
             "latency_table": latency_table}
    if prune is not None or not isinstance(model, (str, Path)):
        check_ratio(prune)
    if not checked_already():  # (a door, Model.prune or a CLI, validated them)
        validate({"prune": prune, **given})
    model, ckpt, source, out = open_input(model, prune_out, exist_ok)
    recorded = recorded_target(ckpt) if prune is None else None
    if prune is None and recorded is None:
        check_ratio(prune)  # the one-line 'prune is missing' error
    if recorded and removed_in_run(model):
        log_info(f"ultra-prune: '{source}' is already pruned: its sparsity_target={recorded[0]:g} run removed the "
                 "zeroed channels itself (prune_at_zero=True); nothing to do. Fine-tune it, or give prune= to prune it "
                 "further")
        return None, None
    # the given settings, else a sparsity_target run's own (else only its imgsz), else the defaults
    run = {k: v for k, v in (ckpt.get("train_args") or {}).items() if k in given and (recorded or k == "imgsz")}
    if recorded:  # a sparsity_target run's own settings, from its checkpoint
        validate({"prune": recorded[0], **run})
    cfg = PruneConfig.of(recorded[0] if recorded else prune,
                         {**run, **{k: v for k, v in given.items() if v is not None}})
    pruned, report = prune_once(model, cfg, data, batch, device, verbose,
                                recorded=(source, recorded[1]) if recorded else None)
    if pruned is None:
        return None, None
    if out is not None:
        write(report, pruned, out, ckpt, source, exist_ok, data, batch, prune_onnx, report_files)
    if verbose:
        announce(report)
        if out is not None:
            log_info(f"ultra-prune: saved {colorstr('bold', str(out))}")
    return pruned, report


def write(report, pruned, out: Path, ckpt: dict, source: Path | None, exist_ok: bool, data, batch: int,
          onnx: bool, report_files: bool) -> None:
    """Save ``pruned`` to ``out`` and (``report_files``) its report beside it (``<stem>_report.txt`` / ``.json``),
    with the file sizes, the accuracy on ``data`` and the ONNX sizes and parity (``onnx``) of a checkpoint
    ``source``."""
    save_model(pruned, out, ckpt, exist_ok)
    report.output = str(out)
    if source is not None:
        report.file_mb = (source.stat().st_size / 1e6, out.stat().st_size / 1e6)
        if data:
            (metric, a), (_, b) = (_accuracy(source, data, report.imgsz, batch), _accuracy(out, data, report.imgsz, batch))
            report.metric, report.accuracy = metric, (a, b)
        if onnx:
            report.onnx_mb, report.onnx_parity = onnx_size_and_parity(source, out, report.imgsz)
    for suffix in (".txt", ".json") if report_files else ():
        report_path = out.with_name(f"{out.stem}_report{suffix}")
        try:
            report.save(report_path)
        except OSError as e:  # disk full, quota, permissions
            raise UltraPruneError(f"wrote '{out}' but not its report '{report_path}' ({e.strerror or e}); "
                                  "free some space, then prune again with exist_ok=True") from None

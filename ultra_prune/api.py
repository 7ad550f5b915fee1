"""The stand-alone prune command behind ``YOLO(...).prune()``, ``yolo prune`` and ``ultra-prune prune``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ultra_prune.args import EXTRA_DEFAULTS, validate
from ultra_prune.errors import UltraPruneError


def default_output(path) -> Path:
    """``sparse.pt`` -> ``sparse_pruned.pt`` in the same folder."""
    p = Path(path)
    return p.with_name(f"{p.stem}_pruned{p.suffix or '.pt'}")


def check_prune_args(prune, prune_round=None, prune_min=None, resume=None) -> None:
    """Raise UltraPruneError for arguments the prune command cannot use (stricter than training: prune is required)."""
    if prune is None:
        raise UltraPruneError("'prune' is missing; give the fraction of channels to remove, e.g. prune=0.5 "
                              "(a checkpoint trained with sparsity_target= records its own)")
    if isinstance(prune, bool):
        raise UltraPruneError(f"'prune={prune}' is not a number; use e.g. prune=0.5")
    if isinstance(prune, (int, float)) and prune == 0:  # validate() lets 0 through: it means 'off' for training
        raise UltraPruneError("'prune=0' removes nothing; give the fraction of channels to remove in (0, 1), e.g. prune=0.5")
    validate({"prune": prune, "prune_round": prune_round, "prune_min": prune_min, "resume": resume})


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
            sizes.append(Path(YOLO(str(local)).export(format="onnx", imgsz=imgsz, verbose=False)).stat().st_size / 1e6)
        x = np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32)
        sess = ort.InferenceSession(str(Path(tmp) / "m1.onnx"), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        model = YOLO(str(Path(tmp) / "m1.pt")).model.float().eval()
        with torch.no_grad():
            ref = model(torch.from_numpy(x))
        ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    return (sizes[0], sizes[1]), float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-12))


def recorded_target(ckpt: dict) -> dict | None:
    """The ``sparsity_target`` run a checkpoint comes from, as prune arguments (None if it is not from one)."""
    args = ckpt.get("train_args") or {}
    if not args.get("sparsity_target"):
        return None
    keys = ("prune_by", "prune_round", "prune_min")
    return {"prune": args["sparsity_target"], **{k: args.get(k, EXTRA_DEFAULTS[k]) for k in keys}}


def importance_for(model, prune_importance: str | None, data, imgsz: int, batch: int, device=None):
    """What ranks the channels: ``prune_importance`` ('auto': Taylor scores from ``data`` when given, else 'l1'),
    as ``prune_model`` takes it (a name, or the ``TaylorScores`` of ``model`` on ``data``)."""
    choice = prune_importance or EXTRA_DEFAULTS["prune_importance"]
    if choice == "auto":
        choice = "taylor" if data else "l1"
    if choice != "taylor":
        return choice
    if not data:
        raise UltraPruneError("prune_importance=taylor scores channels on training data, and no data= was given; "
                              "add data=<the training data> or use prune_importance=l1")
    from ultra_prune.calibrate import taylor_scores

    return taylor_scores(model, data, imgsz, batch, device=device)


def prune(model, prune: float | None = None, prune_round: int | None = None, prune_min: int | None = None,
          prune_out=None, exist_ok: bool = False, data=None, imgsz: int = 640, batch: int = 16,
          prune_onnx: bool = False, verbose: bool = True, prune_by: str | None = None,
          prune_importance: str | None = None, device=None, **_ignored):
    """Prune ``model`` (a checkpoint path or an ultralytics model) and return ``(pruned_model, report)``.

    ``prune`` is the share of prunable channels to remove (``prune_by='channels'``) or of GFLOPs at ``imgsz``
    (``'flops'``), least important first (``prune_importance``: by default first-order Taylor scores from ``data``
    when given, else BN |gamma|). Without ``prune``, a checkpoint of a ``sparsity_target`` run is pruned at its
    recorded target (and floors): exactly the channels that run drove to zero are removed.

    A path input writes ``<stem>_pruned.pt`` beside it (or ``prune_out``), atomically and never over an
    existing file unless ``exist_ok``. A module input is written only when ``prune_out`` is given. With ``data``
    the report also holds mAP50-95 before/after, with ``prune_onnx`` ONNX sizes and onnxruntime parity. When every layer is already at its floor nothing is written
    and ``pruned_model`` is None.
    """
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.checkpoint import check_input, check_output, load_model, save_model
    from ultra_prune.pruning import prune_model
    from ultra_prune.report import PruneReport

    if prune is not None or not isinstance(model, (str, Path)):
        check_prune_args(prune, prune_round, prune_min, _ignored.get("resume"))
    validate({"prune_by": prune_by, "prune_importance": prune_importance})
    source = Path(model) if isinstance(model, (str, Path)) else None
    ckpt = {}
    if source is not None:
        check_input(source)  # input errors first: they are the ones to fix first
    out = Path(prune_out) if prune_out else (default_output(source) if source else None)
    if out is not None:
        check_output(out, exist_ok)
    if source is not None:
        model, ckpt = load_model(source)
    recorded = recorded_target(ckpt) if prune is None else None
    if prune is None:
        if recorded is None:
            check_prune_args(prune)  # the one-line 'prune is missing' error
        prune = recorded["prune"]
    given = {"prune_by": prune_by, "prune_round": prune_round, "prune_min": prune_min}
    prune_by, prune_round, prune_min = (v if v is not None else (recorded or EXTRA_DEFAULTS)[k] for k, v in given.items())
    if recorded:  # the given values were checked above; the recorded ones come from a training run's args
        check_prune_args(prune, prune_round, prune_min)
    importance = "l1" if recorded else importance_for(model, prune_importance, data, imgsz, batch, device)
    pruned, info = prune_model(model, prune, int(prune_round), int(prune_min), prune_by, imgsz,
                               take_dead=recorded is not None, importance=importance)
    prefix = colorstr("ultra-prune:")
    if not info["pruned"]:
        LOGGER.info(f"{prefix} nothing to prune: every prunable layer is already at its floor "
                    f"(prune_min={prune_min}, prune_round={prune_round}); no file written. "
                    "Lower prune_min= (or prune_round=) to prune further")
        return None, None
    report = PruneReport.build(model, pruned, info, prune, int(prune_round), int(prune_min), imgsz, prune_by,
                               info["prune_importance"])
    if out is not None:
        save_model(pruned, out, ckpt, exist_ok)
        report.output = str(out)
        if source is not None:
            report.file_mb = (source.stat().st_size / 1e6, out.stat().st_size / 1e6)
            if data:
                (metric, a), (_, b) = _accuracy(source, data, imgsz, batch), _accuracy(out, data, imgsz, batch)
                report.metric, report.accuracy = metric, (a, b)
            if prune_onnx:
                report.onnx_mb, report.onnx_parity = onnx_size_and_parity(source, out, imgsz)
    if verbose:
        LOGGER.info(f"{prefix} pruned {info['removed_channels']}/{info['prunable_channels']} channels\n{report.text()}")
        if out is not None:
            LOGGER.info(f"{prefix} saved {colorstr('bold', str(out))}")
    return pruned, report

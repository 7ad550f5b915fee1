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
        raise UltraPruneError("'prune' is missing; give the fraction of channels to remove, e.g. prune=0.5")
    if isinstance(prune, bool):
        raise UltraPruneError(f"'prune={prune}' is not a number; use e.g. prune=0.5")
    if isinstance(prune, (int, float)) and prune == 0:  # validate() lets 0 through: it means 'off' for training
        raise UltraPruneError("'prune=0' removes nothing; give the fraction of channels to remove in (0, 1), e.g. prune=0.5")
    validate({"prune": prune, "prune_round": prune_round, "prune_min": prune_min, "resume": resume})


def _map50_95(weights, data, imgsz, batch) -> float:
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        metrics = YOLO(str(weights)).val(data=data, imgsz=imgsz, batch=batch, plots=False, verbose=False,
                                         project=tmp, name="val")
    return float(metrics.box.map)


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


def prune(model, prune: float = 0.5, prune_round: int = EXTRA_DEFAULTS["prune_round"],
          prune_min: int = EXTRA_DEFAULTS["prune_min"], prune_out=None, exist_ok: bool = False, data=None,
          imgsz: int = 640, batch: int = 16, prune_onnx: bool = False, verbose: bool = True, **_ignored):
    """Prune ``model`` (a checkpoint path or a DetectionModel) and return ``(pruned_model, report)``.

    A path input writes ``<stem>_pruned.pt`` beside it (or ``prune_out``), atomically and never over an
    existing file unless ``exist_ok``. A module input is written only when ``prune_out`` is given. With ``data``
    the report also holds mAP50-95 before/after, with ``prune_onnx`` ONNX sizes and onnxruntime parity. When every layer is already at its floor nothing is written
    and ``pruned_model`` is None.
    """
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.checkpoint import check_input, check_output, load_model, save_model
    from ultra_prune.pruning import prune_model
    from ultra_prune.report import PruneReport

    check_prune_args(prune, prune_round, prune_min, _ignored.get("resume"))
    source = Path(model) if isinstance(model, (str, Path)) else None
    ckpt = {}
    if source is not None:
        check_input(source)  # input errors first: they are the ones to fix first
    out = Path(prune_out) if prune_out else (default_output(source) if source else None)
    if out is not None:
        check_output(out, exist_ok)
    if source is not None:
        model, ckpt = load_model(source)
    pruned, info = prune_model(model, prune, int(prune_round), int(prune_min))
    prefix = colorstr("ultra-prune:")
    if not info["pruned"]:
        LOGGER.info(f"{prefix} nothing to prune: every prunable layer is already at its floor "
                    f"(prune_min={prune_min}, prune_round={prune_round}); no file written. "
                    "Lower prune_min= (or prune_round=) to prune further")
        return None, None
    report = PruneReport.build(model, pruned, info, prune, int(prune_round), int(prune_min), imgsz)
    if out is not None:
        save_model(pruned, out, ckpt, exist_ok)
        report.output = str(out)
        if source is not None:
            report.file_mb = (source.stat().st_size / 1e6, out.stat().st_size / 1e6)
            if data:
                report.map50_95 = (_map50_95(source, data, imgsz, batch), _map50_95(out, data, imgsz, batch))
            if prune_onnx:
                report.onnx_mb, report.onnx_parity = onnx_size_and_parity(source, out, imgsz)
    if verbose:
        LOGGER.info(f"{prefix} pruned {info['removed_channels']}/{info['prunable_channels']} channels\n{report.text()}")
        if out is not None:
            LOGGER.info(f"{prefix} saved {colorstr('bold', str(out))}")
    return pruned, report

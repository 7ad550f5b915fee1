"""The stand-alone prune command behind ``YOLO(...).prune()``, ``yolo prune`` and ``ultra-prune prune``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from ultra_prune.args import PruneConfig, validate
from ultra_prune.device import as_device
from ultra_prune.errors import UltraPruneError
from ultra_prune.logs import quiet
from ultra_prune.pruning.importance import NAMED, Importance, Taylor, Zeroed


def default_output(path) -> Path:
    """``sparse.pt`` -> ``sparse_pruned.pt`` in the same folder."""
    p = Path(path)
    return p.with_name(f"{p.stem}_pruned{p.suffix or '.pt'}")


def check_prune_args(prune, prune_round=None, prune_min=None) -> None:
    """Raise UltraPruneError for arguments the prune command cannot use (stricter than training: prune is required)."""
    if prune is None:
        raise UltraPruneError("'prune' is missing; give the fraction of channels to remove, e.g. prune=0.5 "
                              "(a checkpoint trained with sparsity_target= records its own)")
    if isinstance(prune, bool):
        raise UltraPruneError(f"'prune={prune}' is not a number; use e.g. prune=0.5")
    if isinstance(prune, (int, float)) and prune == 0:  # validate() lets 0 through: it means 'off' for training
        raise UltraPruneError("'prune=0' removes nothing; give the fraction of channels to remove in (0, 1), e.g. prune=0.5")
    validate({"prune": prune, "prune_round": prune_round, "prune_min": prune_min})


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
    from ultra_prune.pruning import MARKER

    history = (getattr(model, MARKER, None) or {}).get("history") or [{}]
    return bool(history[-1].get("removed_in_run"))


def warn_short_of_target(source, target: PruneConfig, progress: float, reached: float) -> None:
    """One warning when the channels a ``sparsity_target`` checkpoint has at zero fall short of its target (a
    checkpoint from before the run's zero point, e.g. an early best.pt or epochN.pt, or floors in the way)."""
    from ultra_prune.logs import log
    from ultra_prune.target import ZERO

    if reached >= target.ratio - 1e-6:
        return
    what = f"'{source}'" if source else "the model"
    if progress < ZERO:
        log("warning", f"ultra-prune: {what} is from {progress:.0%} of a sparsity_target={target.ratio:g} run, "
                       f"before its chosen channels reach zero (at {ZERO:.0%} of training): its zero channels are "
                       f"{reached:.1%} of the {target.by}, and only those are pruned. Prune the finished run's last.pt "
                       "(or best.pt), or give prune= to prune by importance")
    else:
        log("warning", f"ultra-prune: the zero channels of {what} are {reached:.1%} of the {target.by}, short of "
                       f"its sparsity_target={target.ratio:g} (the floors allow no more); only those are pruned. Give "
                       "prune= to prune further by importance")


def importance_for(model, name: str, data, imgsz: int, batch: int, device=None) -> Importance:
    """The importance the user's ``prune_importance`` names ('auto': Taylor scores from ``data`` when given, else
    'l1'); Taylor scores are gathered from ``data`` here."""
    if name == "auto":
        name = "taylor" if data else "l1"
    if name != "taylor":
        return NAMED[name]()
    if not data:
        raise UltraPruneError("prune_importance=taylor scores channels on training data, and no data= was given; "
                              "add data=<the training data> or use prune_importance=l1")
    from ultra_prune.calibrate import taylor_scores

    return Taylor(taylor_scores(model, data, imgsz, batch, device=device))


def prune(model, prune: float | None = None, prune_round: int | None = None, prune_min: int | None = None,
          prune_out=None, exist_ok: bool = False, data=None, imgsz: int | None = None, batch: int = 16,
          prune_onnx: bool = False, verbose: bool = True, prune_by: str | None = None,
          prune_importance: str | None = None, device=None, report_files: bool = True,
          latency_runtime: str | None = None, latency_batch: int | None = None, prune_depth: bool | None = None):
    """Prune ``model`` (a checkpoint path or an ultralytics model) and return ``(pruned_model, report)``.

    ``prune`` is the share of prunable channels to remove (``prune_by='channels'``), of GFLOPs at ``imgsz``
    (``'flops'``; by default the checkpoint's training imgsz, else 640) or of latency measured on ``latency_runtime``
    at ``imgsz`` and batch ``latency_batch`` (``'latency'``; see ``ultra_prune.latency``), least important first
    (``prune_importance``: by default first-order Taylor scores from ``data`` when given, else BN |gamma|); where
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
    from ultralytics.utils import LOGGER, colorstr

    from ultra_prune.checkpoint import check_input, check_output, load_model, save_model
    from ultra_prune.pruning import prune_model
    from ultra_prune.report import PruneReport

    given = {"prune_by": prune_by, "prune_importance": prune_importance, "prune_round": prune_round,
             "prune_min": prune_min, "imgsz": imgsz, "latency_runtime": latency_runtime, "latency_batch": latency_batch,
             "prune_depth": prune_depth}
    if prune is not None or not isinstance(model, (str, Path)):
        check_prune_args(prune, prune_round, prune_min)
    validate(given)
    device = as_device(device)
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
    if prune is None and recorded is None:
        check_prune_args(prune)  # the one-line 'prune is missing' error
    if recorded and removed_in_run(model):
        LOGGER.info(f"{colorstr('ultra-prune:')} '{source}' is already pruned: its sparsity_target={recorded[0]:g} run "
                    "removed the zeroed channels itself (prune_at_zero=True); nothing to do. Fine-tune it, or give "
                    "prune= to prune it further")
        return None, None
    # the given settings, else a sparsity_target run's own (else only its imgsz), else the defaults
    run = {k: v for k, v in (ckpt.get("train_args") or {}).items() if k in given and (recorded or k == "imgsz")}
    cfg = PruneConfig.of(recorded[0] if recorded else prune,
                         {**run, **{k: v for k, v in given.items() if v is not None}})
    if recorded:  # the given values were checked above; the recorded ones come from a training run's args
        check_prune_args(cfg.ratio, cfg.round_to, cfg.floor)
        validate({k: getattr(cfg, a) for k, a in (("prune_by", "by"), ("latency_runtime", "runtime"))})
    cfg = cfg.resolved(model, device, verbose)
    table = None
    if cfg.by == "latency":
        from ultra_prune.latency import table_for

        table = table_for(cfg, device, verbose)
    latency = table.model if table else None
    prefix = colorstr("ultra-prune:")
    if recorded:
        from ultra_prune.target import SparsityTarget

        reached = SparsityTarget(cfg.ratio, cfg.by, cfg.round_to, cfg.floor, cfg.imgsz, latency).reached(model)
        warn_short_of_target(source, cfg, recorded[1], reached)
        # exactly the zeroed channels: no share of live ones on top, whatever the counting says
        pruned, info = prune_model(model, 0.0, cfg.round_to, cfg.floor, cfg.by, cfg.imgsz, take_dead=True,
                                   importance=Zeroed(), latency=latency)
    else:
        importance = importance_for(model, cfg.importance, data, cfg.imgsz, batch, device)
        if table is None:
            pruned, info = prune_model(model, cfg.ratio, cfg.round_to, cfg.floor, cfg.by, cfg.imgsz,
                                       importance=importance, depth=cfg.depth)
        else:
            from ultra_prune.measured import prune_to_measured

            pruned, info, measured = prune_to_measured(model, cfg, importance, table, verbose)
    if not info["pruned"]:
        if not recorded:
            LOGGER.info(f"{prefix} nothing to prune: every prunable layer is already at its floor "
                        f"(prune_min={cfg.floor}, prune_round={cfg.round_to}); no file written. "
                        "Lower prune_min= (or prune_round=) to prune further")
        return None, None
    if table is not None and not recorded:
        from ultra_prune.measured import warn_latency_floor

        warn_latency_floor(cfg, *info["latency_ms"])
    report = PruneReport.build(model, pruned, info, cfg.ratio, cfg.round_to, cfg.floor, cfg.imgsz, cfg.by,
                               info["prune_importance"])
    if table is not None:
        report.latency_runtime = f"{cfg.runtime}, batch {cfg.batch}"
        report.latency_predicted = info["latency_ms"]
        report.latency_measured = measured if not recorded else tuple(table.whole([model, pruned], cfg.imgsz))
    if out is not None:
        save_model(pruned, out, ckpt, exist_ok)
        report.output = str(out)
        if source is not None:
            report.file_mb = (source.stat().st_size / 1e6, out.stat().st_size / 1e6)
            if data:
                (metric, a), (_, b) = (_accuracy(source, data, cfg.imgsz, batch), _accuracy(out, data, cfg.imgsz, batch))
                report.metric, report.accuracy = metric, (a, b)
            if prune_onnx:
                report.onnx_mb, report.onnx_parity = onnx_size_and_parity(source, out, cfg.imgsz)
        if report_files:
            for suffix in (".txt", ".json"):
                report_path = out.with_name(f"{out.stem}_report{suffix}")
                try:
                    report.save(report_path)
                except OSError as e:  # disk full, quota, permissions
                    raise UltraPruneError(f"wrote '{out}' but not its report '{report_path}' ({e.strerror or e}); "
                                          "free some space, then prune again with exist_ok=True") from None
    if verbose:
        LOGGER.info(f"{prefix} pruned {info['removed_channels']}/{info['prunable_channels']} channels\n{report.text()}")
        if out is not None:
            LOGGER.info(f"{prefix} saved {colorstr('bold', str(out))}")
    return pruned, report

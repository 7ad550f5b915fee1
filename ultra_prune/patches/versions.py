"""What the installed ultralytics release offers, where releases differ: each gate tests a feature (an attribute, a
module, a signature, a source line, an output form), never a version string. The rest of ultra-prune asks here
instead of probing ultralytics itself. Imports nothing of ultra-prune, so every layer may use it."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import re
from functools import lru_cache


def native_distillation() -> bool:
    """Whether the installed ultralytics ships its own (feature) distillation (8.4.80 and later)."""
    return importlib.util.find_spec("ultralytics.nn.distill_model") is not None


def checkpoint_loader():
    """ultralytics' ``(path, device=, fuse=) -> (model, ckpt)`` loader (``attempt_load_one_weight``, renamed
    ``load_checkpoint`` in 8.3.193)."""
    from ultralytics.nn import tasks

    return getattr(tasks, "load_checkpoint", None) or tasks.attempt_load_one_weight


def cfg_file(path) -> dict:
    """The arguments of a ``cfg=`` file, read as ``Model.train`` reads it (``yaml_load``, ``YAML.load`` from 8.3.x)."""
    from ultralytics import utils
    from ultralytics.utils import checks

    load = getattr(utils, "yaml_load", None) or utils.YAML.load
    return load(checks.check_yaml(path))


def task_trainers() -> dict:
    """The stock trainer class of each task this release has (obb from 8.1)."""
    from ultralytics.models import yolo

    tasks = {"detect": yolo.detect.DetectionTrainer, "segment": yolo.segment.SegmentationTrainer,
             "pose": yolo.pose.PoseTrainer, "classify": yolo.classify.ClassificationTrainer}
    if hasattr(yolo, "obb"):
        tasks["obb"] = yolo.obb.OBBTrainer
    return tasks


def registers_plots(trainer) -> bool:
    """Whether ``trainer`` registers the plots it saves (``on_plot``; not 8.0.x)."""
    return hasattr(trainer, "on_plot")


def formatter_prefixes(logger: logging.Logger, level: int, word: str) -> bool:
    """Whether one of ``logger``'s handlers puts ``word`` right before each message of ``level``: newer ultralytics'
    formatter does; older releases (8.3.100 and before, at least) format a bare ``%(message)s`` and put the prefix in
    each message themselves. A handler that prints the level among other fields (pytest's
    ``%(levelname)s %(name)s:... %(message)s``) does not count."""
    probe = "ultrapruneprobe"
    for handler in logger.handlers:
        record = logging.LogRecord(logger.name, level, __file__, 0, probe, None, None)  # fresh: formatters edit it
        try:
            if re.search(rf"\b{word}\W*{probe}", (handler.formatter or logging.Formatter()).format(record)):
                return True
        except Exception:  # noqa: BLE001 - a custom formatter that cannot format a bare record
            continue
    return False


@lru_cache(maxsize=None)
def aattn_reads_all_head_dim(cls) -> bool:
    """Whether ``AAttn.forward`` reshapes by its stored ``all_head_dim`` (8.3.x reshapes by the input width)."""
    try:
        return "self.all_head_dim" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return False


def head_outputs(preds, reg_max: int, nc: int):
    """``(boxes [B, 4*reg_max, A], scores [B, nc, A])`` of a detection model's raw head outputs, whatever form
    the installed ultralytics gives them: a list of per-level maps (<= 8.3), a dict (8.4), either inside an
    ``(inference, raw)`` tuple; end-to-end heads contribute their one-to-many branch."""
    import torch

    if isinstance(preds, tuple):
        preds = preds[1]
    if isinstance(preds, dict):
        preds = preds.get("one2many", preds)
        return preds["boxes"], preds["scores"]
    x = torch.cat([p.view(p.shape[0], p.shape[1], -1) for p in preds], 2)
    return x.split((4 * reg_max, nc), 1)

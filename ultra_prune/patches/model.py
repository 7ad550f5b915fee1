"""``Model.train`` validates the new arguments and picks the ultra-prune trainer of the model's task;
``Model.prune``."""

from __future__ import annotations

import functools

from ultra_prune.config.keys import SLIMMING_KEYS, checked, is_slimming_run
from ultra_prune.patches.versions import cfg_file
from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl
from ultra_prune.patches import is_ours, ours


def _trainer_for(task):
    from ultra_prune.plugins import get_plugin_manager

    return get_plugin_manager().hook.ultra_prune_trainer(task=task)


def trainer_for_model(model):
    """The ultra-prune trainer for ``model`` (a ``Model``): the plugin's trainer for its task, when it extends the
    trainer the model's own class would use (RT-DETR, World and YOLOE keep theirs: None)."""
    slim = _trainer_for(model.task)
    try:
        stock = model.task_map[model.task]["trainer"]
    except (AttributeError, KeyError, NotImplementedError, TypeError):
        return slim
    return slim if slim is not None and isinstance(stock, type) and issubclass(slim, stock) else None


def check_task(model, kwargs: dict) -> None:
    """Refuse ultra-prune arguments for a model no plugin has a trainer for (rather than train without them)."""
    if not is_slimming_run(kwargs) or trainer_for_model(model) is not None:
        return
    used = sorted(k for k in (*SLIMMING_KEYS, "distill_model") if kwargs.get(k))
    what = f"task '{model.task}'" if _trainer_for(model.task) is None else f"{type(model).__name__} (its own trainer)"
    raise UltraPruneError(
        f"{what} is not supported by ultra-prune, so {', '.join(used)} would be ignored; "
        "train a detect, segment, pose, obb or classify model (e.g. yolov8n.yaml, yolov8n-seg.yaml) or drop "
        "these arguments"
    )


def needs_slim_trainer(model, kwargs: dict) -> bool:
    """Whether ``Model.train(**kwargs)`` on ``model`` is an ultra-prune run: a slimming argument or ultra-prune's
    distillation is asked for, the model is a pruned checkpoint, or the run resumed was one. Every other run keeps
    ultralytics' own trainer, so it behaves exactly like the stock run."""
    from ultra_prune.pruning.record import is_pruned

    if is_slimming_run(kwargs) or is_pruned(getattr(model, "model", None)):
        return True
    ckpt = getattr(model, "ckpt", None)
    return bool(kwargs.get("resume")) and isinstance(ckpt, dict) and is_slimming_run(ckpt.get("train_args") or {})


def wrap_train(train):
    """Model.train(trainer=None, **kw): validate kw (with a ``cfg=`` file's arguments under them) once, here; an
    ultra-prune run gets the slim trainer."""

    @functools.wraps(train)
    def wrapper(self, trainer=None, **kwargs):
        with checked({**(cfg_file(kwargs["cfg"]) if kwargs.get("cfg") else {}), **kwargs}):
            check_task(self, kwargs)
            if trainer is None and needs_slim_trainer(self, kwargs):
                trainer = trainer_for_model(self)
            return train(self, trainer=trainer, **kwargs)

    return ours(wrapper)


def prune(self, **kwargs):
    """Prune this model's channels and load the pruned model into this object, in place; return the ``PruneReport``
    (None when nothing could be pruned). Takes the prune command's keys (``config.keys.COMMAND_KEYS['prune']``:
    ``prune``, ``prune_by``, ``prune_importance``, ``prune_round``, ``prune_min``, ``prune_out``, ``exist_ok``,
    ``data``, ``imgsz``, ...). A model loaded from a checkpoint writes ``<stem>_pruned.pt`` beside it (and loads that
    file)."""
    from ultra_prune.commands.prune import prune as prune_job

    source = self.ckpt_path if getattr(self, "ckpt_path", None) else self.model
    with checked(kwargs, "prune"):
        pruned, report = prune_job(source, **kwargs)
    if pruned is not None:
        if report.output:
            self._load(report.output, task=self.task)
        else:
            self.model = pruned
    return report


@hookimpl
def ultra_prune_patch(ultralytics):
    from ultralytics.engine import model as model_module

    Model = model_module.Model
    if not is_ours(Model.train):
        Model.train = wrap_train(Model.train)
    if not hasattr(Model, "prune"):
        Model.prune = prune

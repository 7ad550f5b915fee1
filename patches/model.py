"""``Model.train`` picks the ultra-prune trainer of the model's task and validates the new arguments; ``Model.prune``."""

from __future__ import annotations

import functools
import inspect

from ultra_prune.args import native_distillation, validate
from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl


def _trainer_for(task):
    from ultra_prune.plugins import get_plugin_manager

    return get_plugin_manager().hook.ultra_prune_trainer(task=task)


def trainer_for_model(model):
    """The ultra-prune trainer for ``model`` (a ``Model``): the plugin's trainer for its task, when it extends the
    trainer the model's own class would use (RT-DETR, World and YOLOE keep theirs: None)."""
    ours = _trainer_for(model.task)
    try:
        stock = model.task_map[model.task]["trainer"]
    except (AttributeError, KeyError, NotImplementedError, TypeError):
        return ours
    return ours if ours is not None and isinstance(stock, type) and issubclass(ours, stock) else None


def check_task(model, kwargs: dict) -> None:
    """Refuse ultra-prune arguments for a model no plugin has a trainer for (rather than train without them)."""
    ours = ("sparsity", "sparsity_beta", "sparsity_target", "prune") + (() if native_distillation() else ("distill_model",))
    used = sorted(k for k in ours if kwargs.get(k))
    if used and trainer_for_model(model) is None:
        what = f"task '{model.task}'" if _trainer_for(model.task) is None else f"{type(model).__name__} (its own trainer)"
        raise UltraPruneError(
            f"{what} is not supported by ultra-prune, so {', '.join(used)} would be ignored; "
            "train a detect, segment, pose, obb or classify model (e.g. yolov8n.yaml, yolov8n-seg.yaml) or drop "
            "these arguments"
        )


def wrap_train(train):
    """Model.train(trainer=None, **kw) (>= 8.0.143): validate kw and default the trainer to ours."""

    @functools.wraps(train)
    def wrapper(self, trainer=None, **kwargs):
        validate(kwargs)
        check_task(self, kwargs)
        if trainer is None:
            trainer = trainer_for_model(self)
        return train(self, trainer=trainer, **kwargs)

    wrapper._ultra_prune = True
    return wrapper


def prune(self, **kwargs):
    """Prune this model's channels (``prune``, ``prune_round``, ``prune_min``, ``prune_out``, ``exist_ok``,
    ``data``) and load the result into this object. Returns the PruneReport (None when nothing was pruned)."""
    from ultra_prune.api import prune as prune_job

    kwargs.pop("mode", None)
    kwargs.pop("model", None)  # the CLI passes model=<path> along with the overrides; it is this object
    kwargs.setdefault("imgsz", self.overrides.get("imgsz", 640))
    validate(kwargs)
    source = self.ckpt_path if getattr(self, "ckpt_path", None) else self.model
    pruned, report = prune_job(source, **kwargs)
    if pruned is not None:
        if report.output:
            self._load(report.output, task=self.task)
        else:
            self.model = pruned
    return report


def reuse_held(load):
    """Wrap ultralytics' checkpoint loader as ``Model`` calls it (``load(weights)``): a checkpoint that a
    ``checkpoint.holding`` block keeps (``yolo prune``, already read by its pre-check) is not read again."""

    @functools.wraps(load)
    def wrapper(weight, *args, **kwargs):
        from ultra_prune.checkpoint import held

        kept = None if args or kwargs else held(weight)
        return kept if kept is not None else load(weight, *args, **kwargs)

    wrapper._ultra_prune = True
    return wrapper


@hookimpl
def ultra_prune_patch(ultralytics):
    from ultralytics.engine import model as model_module

    Model = model_module.Model
    for name in ("load_checkpoint", "attempt_load_one_weight"):  # the name Model._load calls (renamed in 8.3.193)
        load = getattr(model_module, name, None)
        if callable(load) and not getattr(load, "_ultra_prune", False):
            setattr(model_module, name, reuse_held(load))
    if not getattr(Model.train, "_ultra_prune", False):
        if "trainer" in inspect.signature(Model.train).parameters:
            Model.train = wrap_train(Model.train)
        else:  # 8.0.136-8.0.142: the trainer comes from the module-level TASK_MAP
            task_map = model_module.TASK_MAP
            for task, classes in task_map.items():
                if _trainer_for(task):
                    task_map[task] = [*classes[:1], _trainer_for(task), *classes[2:]]
            original = Model.train

            @functools.wraps(original)
            def train(self, **kwargs):
                validate(kwargs)
                check_task(self, kwargs)
                return original(self, **kwargs)

            train._ultra_prune = True
            Model.train = train
    if not hasattr(Model, "prune"):
        Model.prune = prune

"""Version-gated glue: the only code that touches ultralytics internals.

``versions`` answers what the installed release offers, for every layer of the package; ``cfg``, ``cli``,
``compat`` and ``model`` are plugins implementing ``ultra_prune_patch``, and ``apply()`` runs every plugin's patch
once per process. Gates test features (attributes, signatures, module layout), never version strings.
"""

from __future__ import annotations

import inspect

from ultra_prune.errors import UltraPruneError

SUPPORTED = "ultralytics 8.0.143 (Model.train(trainer=...)) through 8.4.x"
MARK = "_ultra_prune"  # set on every function ultra-prune puts in ultralytics' place


def ours(wrapper):
    """Mark ``wrapper`` as ultra-prune's (so applying the patches again leaves it alone); return it."""
    setattr(wrapper, MARK, True)
    return wrapper


def is_ours(obj) -> bool:
    """Whether ``obj`` is a function ultra-prune put in place (``ours``)."""
    return getattr(obj, MARK, False) is True


def check_supported(ultralytics) -> None:
    """Raise UltraPruneError unless ``ultralytics`` has the layout and hook points ultra-prune patches."""
    try:
        from ultralytics.engine.model import Model
        from ultralytics.engine.trainer import BaseTrainer
        from ultralytics.models.yolo.detect import DetectionTrainer
    except ImportError as e:
        raise UltraPruneError(
            f"ultralytics {getattr(ultralytics, '__version__', '?')} is not supported ({e}); "
            f"ultra-prune supports {SUPPORTED}: pip install 'ultralytics>=8.0.143,<8.5'"
        ) from None
    missing = [
        name
        for name, ok in {
            "BaseTrainer.optimizer_step": hasattr(BaseTrainer, "optimizer_step"),
            "BaseTrainer.save_metrics": hasattr(BaseTrainer, "save_metrics"),
            "DetectionTrainer.get_model": hasattr(DetectionTrainer, "get_model"),
            "Model.train(trainer=)": "trainer" in inspect.signature(Model.train).parameters,
        }.items()
        if not ok
    ]
    if missing or not str(getattr(ultralytics, "__version__", "8")).startswith("8."):
        raise UltraPruneError(
            f"ultralytics {ultralytics.__version__} is not supported (missing {missing or 'the 8.x API'}); "
            f"ultra-prune supports {SUPPORTED}: pip install 'ultralytics>=8.0.143,<8.5'"
        )


def apply() -> None:
    """Apply every plugin's patches to the imported ultralytics package; idempotent."""
    import ultralytics

    if getattr(ultralytics, "_ultra_prune_patched", False):
        return
    check_supported(ultralytics)
    from ultra_prune.plugins import get_plugin_manager

    get_plugin_manager().hook.ultra_prune_patch(ultralytics=ultralytics)
    ultralytics._ultra_prune_patched = True

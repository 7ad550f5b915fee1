"""The ``yolo`` CLI: a ``prune`` mode, and ultra-prune errors as one line with a non-zero exit."""

from __future__ import annotations

import contextlib
import functools
import sys

from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl


def parse_cli(args: list[str]) -> tuple[str | None, dict]:
    """``(mode, overrides)`` of ``yolo`` arguments, parsed the way the stock entrypoint parses them; arguments it
    would reject are skipped here (the stock entrypoint reports them)."""
    from ultralytics import cfg

    merge, parse = getattr(cfg, "merge_equals_args", None), getattr(cfg, "parse_key_value_pair", None)
    if parse is None:  # too old to parse like it; the later checks still run
        return None, {}
    try:
        args = merge(args) if merge else args
    except Exception:  # noqa: BLE001 - stock reports it
        return None, {}
    mode, overrides = None, {}
    for a in args:
        a = a[2:] if a.startswith("--") else a
        a = a[:-1] if a.endswith(",") else a
        if "=" in a:
            try:
                k, v = parse(a)
            except Exception:  # noqa: BLE001
                continue
            overrides[k] = v
        elif a in getattr(cfg, "MODES", ()):
            mode = a
        elif a == "resume":  # a bare bool key
            overrides[a] = True
    return mode, overrides


def precheck(args: list[str]) -> tuple | None:
    """Check ultra-prune's arguments before the stock entrypoint builds a model or a run folder.

    For ``yolo prune`` also check the ``model=`` checkpoint, which the stock entrypoint would otherwise hand to
    ``YOLO()`` (a traceback for a missing or broken file, a download attempt for an asset name), and return
    ``(path, (model, ckpt))`` as loaded, for the rest of the command to reuse (None for other modes).
    """
    from ultra_prune.args import EXTRA_DEFAULTS, validate

    mode, overrides = parse_cli(args)
    validate({k: v for k, v in overrides.items() if k in EXTRA_DEFAULTS or k == "resume"})
    if mode != "prune":
        return None
    from ultra_prune.api import check_prune_args
    from ultra_prune.checkpoint import load_model

    if "prune" in overrides:
        check_prune_args(overrides["prune"], resume=overrides.get("resume"))
    model = overrides.get("model")
    if model is None:
        raise UltraPruneError("'model' is missing; pass the checkpoint to prune, e.g. yolo prune model=last.pt prune=0.5")
    return str(model), load_model(str(model))  # missing, a directory, empty, truncated or not a torch file


def wrap_entrypoint(entrypoint):
    """Run the stock entrypoint; an UltraPruneError becomes ``ERROR ❌ ultra-prune: <message>`` and exit 2.
    ``yolo prune`` reads its checkpoint once: what the pre-check loaded is held for ``YOLO()`` and the pruner."""

    @functools.wraps(entrypoint)
    def wrapper(debug="", *args, **kwargs):
        from ultra_prune.checkpoint import holding

        try:
            loaded = precheck((debug.split(" ") if debug else sys.argv)[1:])
            with holding(*loaded) if loaded else contextlib.nullcontext():
                return entrypoint(debug, *args, **kwargs)
        except UltraPruneError as e:
            from ultra_prune.patches.compat import log

            log("error", f"ultra-prune: {e}")
            sys.exit(2)

    wrapper._ultra_prune = True
    return wrapper


@hookimpl
def ultra_prune_patch(ultralytics):
    from ultralytics import cfg

    if hasattr(cfg, "MODES") and "prune" not in cfg.MODES:  # module global read at call time (>= 8.0.45)
        cfg.MODES = type(cfg.MODES)([*cfg.MODES, "prune"])
    if not getattr(cfg.entrypoint, "_ultra_prune", False):
        cfg.entrypoint = wrap_entrypoint(cfg.entrypoint)

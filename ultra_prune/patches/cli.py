"""The ``yolo`` CLI: a ``prune`` mode, ultra-prune's keys in ``yolo help`` / ``yolo cfg``, and bad arguments (ultra-prune's,
or a misspelled key) as one line with a non-zero exit."""

from __future__ import annotations

import difflib
import functools
import re
import sys
from pathlib import Path

from ultra_prune.errors import UltraPruneError
from ultra_prune.hookspecs import hookimpl
from ultra_prune.patches import is_ours, ours

PRUNE_HELP = """
    ultra-prune's 'prune' mode removes the least important channels of a checkpoint and writes the smaller model:

        yolo prune model=sparse.pt                    a sparsity_target= run's checkpoint: remove the channels it zeroed
        yolo prune model=last.pt prune=0.5            remove half of the prunable channels
        yolo prune model=last.pt prune=0.5 prune_by=flops data=coco8.yaml   half the GFLOPs, Taylor-ranked on data
        yolo prune model=last.pt prune=0.5 prune_by=latency imgsz=640      half the onnxruntime CPU latency, measured

    Arguments (key=value):
{args}

    Writes <model>_pruned.pt (or prune_out=) and <output stem>_report.txt / _report.json beside it.
    Docs: {docs}
"""
HELP_EXAMPLE = """    7. Slim a model with ultra-prune (sparse training, pruning, fine-tuning); see 'yolo prune help':
        yolo train model=base.pt data=coco8.yaml epochs=50 sparsity_target=0.5 prune_by=flops
        yolo prune model=runs/detect/train/weights/last.pt
        yolo train model=runs/detect/train/weights/last_pruned.pt data=coco8.yaml epochs=50

"""


def docs() -> str:
    """Where ultra-prune's documentation is: the README of a source checkout, else its name."""
    readme = Path(__file__).resolve().parents[2] / "README.md"  # the checkout holds ultra_prune/patches/
    return f"{readme}#pruning" if readme.is_file() else "ultra-prune's README, section 'Pruning'"


def parse_cli(args: list[str]) -> tuple[str | None, dict, list[str]]:
    """``(mode, overrides, bare words)`` of ``yolo`` arguments, parsed the way the stock entrypoint parses them;
    arguments it would reject are skipped here (the stock entrypoint reports them)."""
    from ultralytics import cfg

    merge, parse = getattr(cfg, "merge_equals_args", None), getattr(cfg, "parse_key_value_pair", None)
    try:
        args = merge(args) if merge else args
    except Exception:  # noqa: BLE001 - stock reports it
        return None, {}, []
    mode, overrides, words = None, {}, []
    for a in args:
        a = a[2:] if a.startswith("--") else a
        a = a[:-1] if a.endswith(",") else a
        if "=" in a and parse is not None:
            try:
                k, v = parse(a)
            except Exception:  # noqa: BLE001
                continue
            overrides[k] = v
        elif a in getattr(cfg, "MODES", ()):
            mode = a
        elif a == "resume":  # a bare bool key
            overrides[a] = True
        else:
            words.append(a.lstrip("-").lower())
    return mode, overrides, words


def unknown_key_error(keys, valid) -> UltraPruneError:
    """The one-line error for keys that are not arguments, with ultralytics' 'similar arguments' suggestions."""
    parts = []
    for k in keys:
        similar = difflib.get_close_matches(k, valid)
        parts.append(f"'{k}' is not a valid YOLO argument" + (f" (similar: {', '.join(similar)})" if similar else ""))
    return UltraPruneError("; ".join(parts) + ". See 'yolo cfg' for every argument")


def one_line(error: SyntaxError) -> UltraPruneError | None:
    """Ultralytics' unknown-key SyntaxError (its message, then the whole CLI help) as one line; None for others."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # without the terminal colours of older releases
    lines = [" ".join(line.split()) for line in text.splitlines() if "is not a valid YOLO argument" in line]
    return UltraPruneError(" ".join(lines) + " See 'yolo cfg' for every argument") if lines else None


def prune_command(overrides: dict, words: list[str]) -> None:
    """``yolo prune k=v ...``: check the keys and run the prune command on ``model=`` (the stock entrypoint has no
    such mode, so it never builds a model or a run folder for it). Valid ultralytics keys the command does not take
    (``COMMAND_KEYS['prune']``) are ignored with a warning."""
    from ultralytics.utils import DEFAULT_CFG_DICT, LOGGER

    from ultra_prune.commands.prune import prune
    from ultra_prune.config.docs import command_rows
    from ultra_prune.config.keys import COMMAND_KEYS
    from ultra_prune.io.logs import log

    if "help" in words or "h" in words:
        LOGGER.info(PRUNE_HELP.format(args=command_rows("prune"), docs=docs()))
        return
    keys = COMMAND_KEYS["prune"]
    unknown = [k for k in overrides if k not in DEFAULT_CFG_DICT and k not in keys and k != "model"]
    if unknown:
        raise unknown_key_error(unknown, list(DEFAULT_CFG_DICT))
    model = overrides.pop("model", None)
    if model is None:
        raise UltraPruneError("'model' is missing; pass the checkpoint to prune, e.g. yolo prune model=last.pt prune=0.5 "
                              "(yolo prune help lists the arguments)")
    ignored = sorted(k for k in overrides if k not in keys and k != "mode")
    if ignored:
        log("warning", f"ultra-prune: 'yolo prune' does not use {', '.join(ignored)}; ignored")
    prune(str(model), **{k: v for k, v in overrides.items() if k in keys})
    LOGGER.info(f"💡 Learn more in {docs()}")


def unreadable_checkpoint(model) -> None:
    """After a failed command: raise the one-line UltraPruneError for its ``model=`` checkpoint if that file cannot
    be read (truncated, corrupted, empty); return when it can (the failure is something else)."""
    from ultra_prune.io.checkpoint import load_model

    if isinstance(model, str) and model.endswith((".pt", ".pth")) and Path(model).exists():
        load_model(model)


def print_cfg_keys() -> None:
    """After the stock ``yolo cfg``: ultra-prune's keys, their defaults and what they mean, in the same yaml look."""
    from ultralytics.utils import LOGGER

    from ultra_prune.config.docs import cfg_rows

    LOGGER.info("\n# ultra-prune (network slimming) ---------------------------------------------------------------------\n"
                + cfg_rows())


def wrap_entrypoint(entrypoint):
    """Run ``yolo prune`` here and every other command through the stock entrypoint; an UltraPruneError or a
    misspelled key becomes ``ERROR ❌ ultra-prune: <message>`` and exit 2."""

    @functools.wraps(entrypoint)
    def wrapper(debug="", *args, **kwargs):
        from ultra_prune.config.keys import checked, validate
        from ultra_prune.io.logs import log

        argv = (debug.split(" ") if debug else sys.argv)[1:]
        try:
            mode, overrides, words = parse_cli(argv)
            given = {k: v for k, v in overrides.items() if k != "model"}
            if mode == "prune":
                with checked(given):
                    return prune_command(overrides, words)
            if mode != "train":  # (a training run's arguments are validated by Model.train, which it calls)
                validate(given)
            try:
                result = entrypoint(debug, *args, **kwargs)
            except SyntaxError as e:
                raise one_line(e) or e from None
            except Exception:  # noqa: BLE001 - re-raised unless the checkpoint it was given is what broke
                unreadable_checkpoint(overrides.get("model"))
                raise
            if mode is None and words and words[0] == "cfg" and not overrides:
                print_cfg_keys()
            return result
        except UltraPruneError as e:
            log("error", f"ultra-prune: {e}")
            sys.exit(2)

    return ours(wrapper)


@hookimpl
def ultra_prune_patch(ultralytics):
    from ultralytics import cfg

    if hasattr(cfg, "MODES") and "prune" not in cfg.MODES:  # module global read at call time (>= 8.0.45)
        before = cfg.MODES
        cfg.MODES = type(cfg.MODES)([*cfg.MODES, "prune"])
        help_msg = getattr(cfg, "CLI_HELP_MSG", None)
        if isinstance(help_msg, str) and "yolo prune" not in help_msg:  # `yolo help` reads it at call time
            for shown in (str(list(before)), str(before)):  # the modes as the message lists them (8.4: a list)
                if shown in help_msg:
                    help_msg = help_msg.replace(shown, str(list(cfg.MODES) if shown.startswith("[") else cfg.MODES), 1)
                    break
            at = help_msg.find("    Docs:")
            cfg.CLI_HELP_MSG = help_msg[:at] + HELP_EXAMPLE + help_msg[at:] if at >= 0 else help_msg + HELP_EXAMPLE
    if not is_ours(cfg.entrypoint):
        cfg.entrypoint = wrap_entrypoint(cfg.entrypoint)

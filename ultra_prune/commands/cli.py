"""The ``ultra-prune`` console command: ``demo`` (the whole pipeline) and ``prune`` (a checkpoint), key=value style."""

from __future__ import annotations

import sys

HELP = """ultra-prune — network slimming for Ultralytics YOLO

    ultra-prune demo [out=ultra_prune_demo] [epochs=1.0] [data=DATA.yaml] [model=yolov8n.yaml] [imgsz=128]
                     [recipe=oneshot] [prune=0.5] [prune_by=flops] [exist_ok=False]
        base training -> one run that prunes and fine-tunes (recipe=classic: sparse training -> pruning ->
        fine-tuning) -> ONNX, on a generated dataset by default; 'epochs' scales every stage (1.0 = 20 base
        epochs, then 20 more).

    ultra-prune prune model=sparse.pt [key=value ...]
        writes sparse_pruned.pt (or prune_out) and prints the before/after report (mAP too with data=,
        ONNX sizes and onnxruntime parity with prune_onnx=True). Without prune=, a checkpoint trained with
        sparsity_target= is pruned at its recorded target. The keys (the same as `yolo prune`):
{prune_keys}

The same arguments work with the stock CLI: `yolo train ... sparsity_target=0.5`, `yolo train ... prune=0.5`,
`yolo prune model=sparse.pt`.
"""


def parse_value(v: str):
    """'1e-2' -> 0.01, '8' -> 8, 'true' -> True, 'none' -> None, else the string."""
    low = v.lower()
    if low in {"true", "false"}:
        return low == "true"
    if low == "none":
        return None
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def parse_args(argv: list[str]) -> dict:
    from ultra_prune.errors import UltraPruneError

    out = {}
    for a in argv:
        if "=" not in a:
            raise UltraPruneError(f"argument '{a}' is not key=value; e.g. ultra-prune prune model=x.pt prune=0.5")
        k, v = a.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ultra-prune`` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"help", "-h", "--help"}:
        from ultra_prune.config.docs import command_rows

        print(HELP.format(prune_keys=command_rows("prune")))
        return 0
    from ultra_prune.config.keys import check_command
    from ultra_prune.errors import UltraPruneError

    command, rest = argv[0], argv[1:]
    try:
        from ultra_prune.patches import apply

        apply()

        kwargs = parse_args(rest)
        if command == "demo":
            from ultra_prune.commands.demo import run

            check_command("demo", kwargs)
            run(**kwargs)
        elif command == "prune":
            from ultra_prune.commands.prune import prune

            if "model" not in kwargs:
                raise UltraPruneError("'model' is missing; e.g. ultra-prune prune model=sparse.pt prune=0.5")
            check_command("prune", kwargs)
            prune(kwargs.pop("model"), **kwargs)
        else:
            raise UltraPruneError(f"unknown command '{command}'; use 'ultra-prune demo' or 'ultra-prune prune' (see --help)")
    except UltraPruneError as e:
        print(f"ERROR ❌ ultra-prune: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with main()'s code."""
    sys.exit(main())


if __name__ == "__main__":
    run()

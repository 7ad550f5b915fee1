"""The ``ultra-prune`` console command, key=value style: ``demo`` (the whole pipeline), ``prune`` (a checkpoint),
``agent`` (latency measured on a device) and ``latency-kit`` (what an unreachable device times)."""

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

    ultra-prune agent [runtime=onnxruntime] [precision=fp32] [host=127.0.0.1] [port=8765] [token=...] [kit=DIR]
        on the device a model ships to: times models for prune_by=latency latency_device=http://host:port
        (ultra-prune agent help: every key); needs Python, numpy and the runtime only.

    ultra-prune latency-kit model=base.pt out=DIR [imgsz=640] [prune_round=8] [latency_batch=1]
        the ONNX models a device that cannot be reached times offline (ultra-prune agent kit=DIR there), for
        prune_by=latency latency_table=DIR/table.json.

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
    command, rest = argv[0], argv[1:]
    if command == "agent":  # no torch, no ultralytics: what the device runs
        from ultra_prune.latency.agent import main as agent

        return agent(rest)
    from ultra_prune.config.keys import checked
    from ultra_prune.errors import UltraPruneError

    try:
        from ultra_prune.patches import apply

        apply()

        kwargs = parse_args(rest)
        if command == "demo":
            from ultra_prune.commands.demo import run

            with checked(kwargs, "demo"):
                run(**kwargs)
        elif command == "prune":
            from ultra_prune.commands.prune import prune

            if "model" not in kwargs:
                raise UltraPruneError("'model' is missing; e.g. ultra-prune prune model=sparse.pt prune=0.5")
            with checked(kwargs, "prune"):
                prune(kwargs.pop("model"), **kwargs)
        elif command == "latency-kit":
            from ultra_prune.commands.kit import latency_kit

            kit = latency_kit(**kwargs)
            print(f"ultra-prune: wrote {kit}; time it on the device: ultra-prune agent runtime=... kit={kit.parent}")
        else:
            raise UltraPruneError(f"unknown command '{command}'; use 'ultra-prune demo', 'prune', 'agent' or "
                                  "'latency-kit' (see --help)")
    except UltraPruneError as e:
        print(f"ERROR ❌ ultra-prune: {e}", file=sys.stderr)
        return 2
    return 0


def run() -> None:
    """Console-script wrapper: exit with main()'s code."""
    sys.exit(main())


if __name__ == "__main__":
    run()

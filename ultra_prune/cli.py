"""The ``ultra-prune`` console command: ``demo`` (the whole pipeline) and ``prune`` (a checkpoint), key=value style."""

from __future__ import annotations

import sys

HELP = """ultra-prune — network slimming for Ultralytics YOLO

    ultra-prune demo [out=ultra_prune_demo] [epochs=1.0] [data=DATA.yaml] [model=yolov8n.yaml] [imgsz=128]
                     [recipe=oneshot] [prune=0.5] [prune_by=flops] [exist_ok=False]
        base training -> one run that prunes and fine-tunes (recipe=classic: sparse training -> pruning ->
        fine-tuning) -> ONNX, on a generated dataset by default; 'epochs' scales every stage (1.0 = 20 base
        epochs, then 20 more).

    ultra-prune prune model=sparse.pt [prune=0.5] [prune_by=channels] [prune_importance=auto] [prune_round=auto]
                      [prune_min=8] [prune_depth=True] [prune_out=PATH] [exist_ok=False] [data=DATA.yaml] [imgsz=640]
                      [prune_onnx=False] [latency_runtime=onnxruntime] [latency_batch=1]
        writes sparse_pruned.pt (or prune_out) and prints the before/after report (mAP too with data=,
        ONNX sizes and onnxruntime parity with prune_onnx=True). With data=, channels are ranked by Taylor scores
        from its training split (prune_importance=taylor), else by BN |gamma| (l1). Without prune=, a checkpoint
        trained with sparsity_target= is pruned at its recorded target. prune_by=latency removes that share of
        the latency measured on latency_runtime (and reports predicted and measured latency before/after).

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
        print(HELP)
        return 0
    from ultra_prune.errors import UltraPruneError

    command, rest = argv[0], argv[1:]
    try:
        import ultra_prune

        ultra_prune.apply()

        kwargs = parse_args(rest)
        if command == "demo":
            from ultra_prune.demo import run

            allowed = {"out", "epochs", "data", "model", "imgsz", "recipe", "prune", "prune_by", "batch", "exist_ok"}
            unknown = sorted(set(kwargs) - allowed)
            if unknown:
                raise UltraPruneError(f"unknown demo argument(s) {unknown}; valid: {sorted(allowed)}")
            run(**kwargs)
        elif command == "prune":
            from ultra_prune.api import prune

            if "model" not in kwargs:
                raise UltraPruneError("'model' is missing; e.g. ultra-prune prune model=sparse.pt prune=0.5")
            allowed = {"model", "prune", "prune_by", "prune_importance", "prune_round", "prune_min", "prune_depth",
                       "prune_out", "prune_onnx", "latency_runtime", "latency_batch", "exist_ok", "data", "imgsz",
                       "batch"}
            unknown = sorted(set(kwargs) - allowed)
            if unknown:
                raise UltraPruneError(f"unknown prune argument(s) {unknown}; valid: {sorted(allowed)}")
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

"""The typed settings of one pruning, built once from the keys (``PruneConfig.of``) and carried to the engine."""

from __future__ import annotations

from dataclasses import dataclass

from ultra_prune.config.keys import DEFAULTS


@dataclass(frozen=True)
class PruneConfig:
    """One pruning's (or one sparse-target run's) settings in the pruner's words, built from ultra-prune's keys in
    one place (``of``): the share ``ratio`` of the budget ``by`` to remove, the importance's name, the rounding
    (``'auto'`` until the engine resolves it) and floor of kept counts, the image size FLOPs, latency and Taylor
    scores are counted at, the runtime, batch and precision latency is measured at, and where (``agent``: an
    agent's address; ``table``: a table an agent wrote; neither: here), and whether ``prune=`` may remove whole
    residual blocks where the floors stop it (``depth``)."""

    ratio: float
    by: str = "channels"
    importance: str = "auto"
    round_to: int | str = "auto"
    floor: int = 8
    imgsz: int = 640
    runtime: str = "onnxruntime"
    batch: int = 1
    depth: bool = True
    precision: str = "fp32"
    agent: str | None = None
    table: str | None = None

    @classmethod
    def of(cls, ratio: float, args: dict) -> PruneConfig:
        """From ``args`` (user arguments or a run's ``train_args``; a missing or None key takes its default)."""
        def get(key):
            return args[key] if args.get(key) is not None else DEFAULTS.get(key)

        imgsz = args.get("imgsz") or 640
        imgsz = max(imgsz) if isinstance(imgsz, (list, tuple)) else imgsz
        round_to = get("prune_round")
        return cls(float(ratio), get("prune_by"), get("prune_importance"),
                   round_to if round_to == "auto" else int(round_to), int(get("prune_min")), int(imgsz),
                   get("latency_runtime"), int(get("latency_batch")), bool(get("prune_depth")),
                   get("latency_precision"), get("latency_device"), get("latency_table"))

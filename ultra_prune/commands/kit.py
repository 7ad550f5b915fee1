"""``ultra-prune latency-kit``: the ONNX models a device the training machine cannot reach times offline (``ultra-prune
agent kit=DIR`` there), for ``latency_table=DIR/table.json`` (``latency.offline``)."""

from __future__ import annotations

import json
from pathlib import Path

from ultra_prune.errors import UltraPruneError
from ultra_prune.latency.agent import KIT


def write_kit(model, imgsz: int, round_to: int, batch: int, out) -> Path:
    """Write the kit of ``model`` (an ultralytics nn.Module) at ``imgsz``, rounding ``round_to`` and ``batch`` into
    the new folder ``out``: one conv per width the pruner may give each layer, and the whole model. Returns its
    ``kit.json``."""
    from ultra_prune.latency.runtimes import conv_onnx, export_onnx
    from ultra_prune.latency.table import LatencyTable, _shape_key
    from ultra_prune.pruning.probe import input_channels

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UltraPruneError(f"latency-kit: '{out}' exists and is not empty; give a new out= folder")
    out.mkdir(parents=True, exist_ok=True)
    table = LatencyTable(Listing(), round_to, batch, verbose=False)
    models = []
    for i, (shape, cin, cout) in enumerate(table.points(model, imgsz)):
        (out / f"conv{i}.onnx").write_bytes(conv_onnx(shape, cin, cout))
        models.append({"file": f"conv{i}.onnx", "shape": [shape.batch, cin, shape.height, shape.width],
                       "key": _shape_key(shape, cin, cout)})
    whole = export_onnx(model, imgsz, batch, out)
    models.append({"file": whole.name, "shape": [batch, input_channels(model), imgsz, imgsz],
                   "key": f"model {table.arch_key(model, imgsz)}"})
    kit = out / KIT
    kit.write_text(json.dumps({"models": models, "round": round_to, "batch": batch, "imgsz": imgsz}, indent=1))
    return kit


class Listing:
    """The runtime a kit is listed with: it times nothing."""

    name = "kit"

    def key(self) -> str:
        return "kit"


def latency_kit(model=None, out=None, imgsz: int = 640, prune_round: int = 8, latency_batch: int = 1) -> Path:
    """``ultra-prune latency-kit model=... out=...``: the kit of the checkpoint ``model`` in the new folder ``out``."""
    from ultra_prune.config.keys import validate
    from ultra_prune.io.checkpoint import check_input, load_model

    if not model or not out:
        raise UltraPruneError("latency-kit needs model= and out=; e.g. ultra-prune latency-kit model=base.pt out=kit")
    validate({"prune_round": prune_round, "latency_batch": latency_batch})
    check_input(model)
    return write_kit(load_model(model)[0], int(imgsz), int(prune_round), int(latency_batch), out)

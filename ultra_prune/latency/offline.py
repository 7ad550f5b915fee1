"""Latency measured on a device the training machine cannot reach: the table an agent wrote from a kit
(``latency_table=``; the kit: ``commands/kit.py``).

    ultra-prune latency-kit model=base.pt imgsz=640 prune_round=8 out=kit/    # here: the kit
    ultra-prune agent runtime=ncnn kit=kit/                                     # there: kit/table.json
    yolo prune model=base.pt prune=0.5 prune_by=latency latency_table=kit/table.json

The table gives the pruner its per-conv timings and the whole model's time, which scales their sum. A pruned model
is not timed (the device is out of reach): the report gives the predicted latency only.
"""

from __future__ import annotations

import json
from pathlib import Path

from ultra_prune.errors import UltraPruneError
from ultra_prune.latency.agent import KIT, identity_key


class TableFile:
    """The runtime of an agent's offline table (``table.json`` beside its ``kit.json``): timings looked up by the
    latency table's keys; its kit's rounding and batch are the only ones it has."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            table = json.loads(self.path.read_text())
            kit = json.loads((self.path.parent / KIT).read_text())
            self.who, self.ms = table["identity"], table["ms"]
            self.round_to, self.batch = int(kit["round"]), int(kit["batch"])
        except (OSError, ValueError, KeyError) as e:
            raise UltraPruneError(f"latency_table={path} is not an agent's table beside its kit.json ({e}); run "
                                  "ultra-prune agent kit=<the kit folder> on the device and give its table.json") from None
        self.name = f"the table {self.path}"
        self.origin = f" (offline table {self.path})"

    def key(self) -> str:
        return identity_key(self.who)

    def lookup(self, key: str, what: str) -> float:
        """The timing filed under ``key`` (``what`` it is, for the error when the kit did not have it)."""
        if key not in self.ms:
            raise UltraPruneError(f"latency_table={self.path} has no timing of {what}: make a kit of this model, "
                                  f"imgsz, prune_round={self.round_to} and latency_batch={self.batch} "
                                  "(ultra-prune latency-kit) and time it on the device")
        return self.ms[key]

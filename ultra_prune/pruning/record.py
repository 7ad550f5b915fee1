"""What a pruning leaves behind, typed: the result ``prune_model`` returns (``Pruning``) and the history a pruned
model carries (``HistoryEntry``s, stored as plain dicts under ``MARKER`` so that checkpoints load without this module, those
of earlier releases included)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

MARKER = "ultra_prune"  # attribute on the pruned model: {"history": [step dicts], "widths": ..., "original_widths": ...}


def is_pruned(model) -> bool:
    """True for a model ultra-prune pruned (it carries the marker)."""
    return isinstance(getattr(model, MARKER, None), dict)


class ByName:
    """Fields also readable by name (``result["pruned"]``), as the dicts these records replace were."""

    def __getitem__(self, name: str):
        if name not in {f.name for f in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default=None):
        return getattr(self, name, default)


@dataclass
class Pruning(ByName):
    """What one ``prune_model`` changed: whether anything was removed, the top-level layers' types and output widths
    before and after, the prunable and removed channel counts, the blocks left intact (and why), the importance's
    name, the residual blocks removed whole (module names), under a latency budget the predicted latency in ms
    (before, after), and each sliced parameter's name -> the rows and columns of the original it kept
    (``surgery.Kept``)."""

    pruned: bool
    widths_before: list
    widths_after: list
    layer_types: list
    prunable_channels: int
    removed_channels: int
    left_intact: list
    prune_importance: str
    removed_blocks: list = field(default_factory=list)
    latency_ms: tuple | None = None
    sliced: dict = field(default_factory=dict)


@dataclass
class HistoryEntry(ByName):
    """One pruning in a model's history: the share removed (``prune``) of the budget ``prune_by``, the rounding and
    floor, the importance's name, the top-level widths before it, the blocks it removed whole, and whether a
    ``prune_at_zero`` run made it. Field names are the stored dict's keys."""

    prune: float
    prune_by: str = "channels"
    prune_round: int | str = 8
    prune_min: int = 8
    prune_importance: str = "l1"
    widths_before: list = field(default_factory=list)
    removed_blocks: list = field(default_factory=list)
    removed_in_run: bool = False

    @classmethod
    def of(cls, stored: dict) -> HistoryEntry:
        """From its stored dict (any release's: missing keys take their defaults, unknown ones are dropped)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})

    def stored(self) -> dict:
        """The dict a model's marker keeps."""
        return asdict(self)


def history(model) -> list[HistoryEntry]:
    """The prunings ``model`` went through, oldest first (empty for a model ultra-prune never pruned)."""
    return [HistoryEntry.of(s) for s in (getattr(model, MARKER, None) or {}).get("history") or [] if "prune" in s]

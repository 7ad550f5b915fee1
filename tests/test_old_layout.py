"""Checkpoints of the flat layout (before the subpackages) still load: a pruned checkpoint pickles none of
ultra-prune's classes (its history is plain dicts, read as typed entries), and the old module paths a pickle may name
(a distillation criterion, the trainers) still import."""

from __future__ import annotations

import pickle
import zipfile

from helpers import base

from ultra_prune.io.checkpoint import load_model, save_model
from ultra_prune.pruning import MARKER, prune_model
from ultra_prune.pruning.record import HistoryEntry, history


def test_a_pruned_checkpoint_pickles_no_ultra_prune_class(tmp_path):
    pruned, _ = prune_model(base("yolov8n.yaml"), 0.3)
    save_model(pruned, tmp_path / "p.pt")
    with zipfile.ZipFile(tmp_path / "p.pt") as z:
        data = b"".join(z.read(n) for n in z.namelist() if n.endswith(".pkl"))
    assert b"ultra_prune." not in data
    loaded = load_model(tmp_path / "p.pt")[0]
    assert history(loaded) == [HistoryEntry(0.3, "channels", 8, 8, "l1", getattr(loaded, MARKER)["original_widths"])]


def test_an_older_history_entry_reads_with_defaults():
    class Model:
        pass

    old = Model()
    setattr(old, MARKER, {"history": [{"prune": 0.5, "prune_round": 16, "prune_min": 4, "from": "a later release"}]})
    (entry,) = history(old)
    assert (entry.prune, entry.prune_by, entry.prune_round, entry.prune_min, entry.removed_in_run) == \
        (0.5, "channels", 16, 4, False)


def test_old_module_paths_unpickle():
    from ultra_prune.slimming.distill import DistillCriterion
    from ultra_prune.train.trainer import SlimDetectionTrainer

    old = pickle.dumps(DistillCriterion(None, None, 16, 80), protocol=0).replace(
        b"ultra_prune.slimming.distill", b"ultra_prune.distill")
    assert pickle.loads(old).nc == 80
    assert pickle.loads(pickle.dumps(SlimDetectionTrainer, protocol=0).replace(
        b"ultra_prune.train.trainer", b"ultra_prune.trainer")) is SlimDetectionTrainer

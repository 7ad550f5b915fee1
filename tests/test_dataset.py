"""The built-in generated datasets: deterministic, valid YOLO labels, no downloads."""

from __future__ import annotations

import numpy as np

from ultra_prune.dataset import HARD_CLASSES, make_hard_dataset


def labels(root):
    rows = [line.split() for f in sorted((root / "labels" / "train").glob("*.txt")) for line in f.read_text().split("\n") if line]
    return np.array(rows, dtype=float)


def test_hard_dataset_is_deterministic_crowded_and_valid(tmp_path):
    a = make_hard_dataset(tmp_path / "a", n_train=12, n_val=3, imgsz=96)
    b = make_hard_dataset(tmp_path / "b", n_train=12, n_val=3, imgsz=96)
    assert (a.parent / "images/train/00005.jpg").read_bytes() == (b.parent / "images/train/00005.jpg").read_bytes()
    rows = labels(a.parent)
    assert len(rows) >= 12 * 4  # 4-24 objects per image
    assert set(rows[:, 0].astype(int)) <= set(range(len(HARD_CLASSES))) and len(set(rows[:, 0])) > 5
    assert (rows[:, 1:] > 0).all() and (rows[:, 1:] <= 1).all()
    assert np.median(rows[:, 3]) < 0.12  # small objects: median side under 12 % of the image
    assert "9: cool ring" in a.read_text()

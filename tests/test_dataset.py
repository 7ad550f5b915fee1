"""The built-in generated datasets: deterministic, valid YOLO labels, no downloads."""

from __future__ import annotations

import inspect

import cv2
import numpy as np
import pytest

from ultra_prune.commands.dataset import (CLASSES, COLOURS, DISC_POINTS, HARD_CLASSES, OBB_CLASSES, make_classify_dataset,
                                 make_hard_dataset, make_obb_dataset, make_pose_dataset, make_segment_dataset,
                                 make_task_dataset)


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


def check_with_ultralytics(data_yaml, keypoint=False):
    """Every label file passes ultralytics' own per-file check (what training's label scan runs) with no message."""
    import yaml
    from ultralytics.data.utils import verify_image_label

    data = yaml.safe_load(data_yaml.read_text())
    nkpt, ndim = data.get("kpt_shape", (0, 0))
    takes_single_cls = "single_cls" in inspect.getsource(verify_image_label)  # an 8th argument in later releases
    for split in ("train", "val"):
        for lb in sorted((data_yaml.parent / "labels" / split).glob("*.txt")):
            im = data_yaml.parent / "images" / split / f"{lb.stem}.jpg"
            args = (str(im), str(lb), "", keypoint, len(data["names"]), nkpt, ndim, False)
            out = verify_image_label(args if takes_single_cls else args[:7])
            assert out[-1] == "" and out[8] == 0, out[-1]  # no message, not corrupt
    return data


def same_files(a, b):
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def rows_of_file(f):
    return [[float(v) for v in line.split()] for line in f.read_text().split("\n") if line]


def rows_of(root):
    return [r for f in sorted((root / "labels").rglob("*.txt")) for r in rows_of_file(f)]


def test_segment_dataset_has_one_polygon_per_drawn_shape(tmp_path):
    a = make_segment_dataset(tmp_path / "a", n_train=8, n_val=2, imgsz=96)
    same_files(a.parent, make_segment_dataset(tmp_path / "b", n_train=8, n_val=2, imgsz=96).parent)
    check_with_ultralytics(a)
    rows = rows_of(a.parent)
    vertices = {0: 4, 1: DISC_POINTS, 2: 3, 3: 12}  # square, disc, triangle, cross
    assert {int(r[0]) for r in rows} == set(vertices)
    for r in rows:
        assert len(r) == 1 + 2 * vertices[int(r[0])]
        assert 0 <= min(r[1:]) and max(r[1:]) <= 1  # every point inside the image
    # the polygons cover the coloured pixels: filled label polygons vs strongly coloured pixels (IoU), per image
    for lb in sorted((a.parent / "labels/train").glob("*.txt")):
        img = cv2.imread(str(a.parent / "images/train" / f"{lb.stem}.jpg"))
        mask = np.zeros(img.shape[:2], np.uint8)
        for r in rows_of_file(lb):
            cv2.fillPoly(mask, [(np.array(r[1:]).reshape(-1, 2) * 96).round().astype(np.int32)], 1)
        coloured = np.abs(img.astype(int) - 100).max(2) > 60
        assert (coloured & (mask > 0)).sum() / (coloured | (mask > 0)).sum() > 0.75


def test_pose_dataset_keypoints_are_the_corners_and_flip_idx_is_consistent(tmp_path):
    a = make_pose_dataset(tmp_path / "a", n_train=8, n_val=2, imgsz=64)
    same_files(a.parent, make_pose_dataset(tmp_path / "b", n_train=8, n_val=2, imgsz=64).parent)
    data = check_with_ultralytics(a, keypoint=True)
    assert data["kpt_shape"] == [3, 3] and sorted(data["flip_idx"]) == [0, 1, 2] and data["names"] == {0: "triangle"}
    rows = np.array(rows_of(a.parent))
    assert rows.shape[1] == 5 + 3 * 3 and (rows[:, 0] == 0).all()
    box, kpt = rows[:, 1:5], rows[:, 5:].reshape(-1, 3, 3)
    assert (kpt[..., 2] == 2).all() and (kpt[..., :2] >= 0).all() and (kpt[..., :2] <= 1).all()
    # the box is the keypoints' bounding box
    lo, hi = kpt[..., :2].min(1), kpt[..., :2].max(1)
    assert np.allclose(box[:, :2], (lo + hi) / 2, atol=1e-5) and np.allclose(box[:, 2:], hi - lo, atol=1e-5)

    def turn(k):  # the sign of the corners' turning order (apex, then the base corners)
        (x0, y0), (x1, y1), (x2, y2) = k[:, 0, :2].T, k[:, 1, :2].T, k[:, 2, :2].T
        return np.sign((x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0))

    assert (turn(kpt) == turn(kpt)[0]).all()  # one handedness for every labelled triangle...
    flipped = kpt.copy()
    flipped[..., 0] = 1 - flipped[..., 0]
    assert (turn(flipped) == -turn(kpt)).all()  # ...which a left/right flip reverses...
    assert (turn(flipped[:, data["flip_idx"]]) == turn(kpt)).all()  # ...and flip_idx restores


def test_obb_dataset_labels_are_rotated_rectangles(tmp_path):
    a = make_obb_dataset(tmp_path / "a", n_train=8, n_val=2, imgsz=64)
    same_files(a.parent, make_obb_dataset(tmp_path / "b", n_train=8, n_val=2, imgsz=64).parent)
    check_with_ultralytics(a)
    rows = np.array(rows_of(a.parent))
    assert rows.shape[1] == 9 and set(rows[:, 0].astype(int)) <= set(range(len(OBB_CLASSES)))
    corners = rows[:, 1:].reshape(-1, 4, 2)
    assert (corners >= 0).all() and (corners <= 1).all()
    sides = np.roll(corners, -1, axis=1) - corners
    length = np.linalg.norm(sides, axis=2)
    assert np.allclose(length[:, :2], length[:, 2:], atol=1e-5)  # opposite sides equal...
    assert np.allclose((sides[:, 0] * sides[:, 1]).sum(1), 0, atol=1e-5)  # ...and at right angles
    aspect = length.min(1) / length.max(1)
    assert (aspect > 0.24).all() and (aspect < 0.67).all()
    angle = np.degrees(np.arctan2(sides[:, 0, 1], sides[:, 0, 0])) % 90
    assert np.ptp(angle) > 45  # really rotated, not axis-aligned


def test_classify_dataset_is_a_folder_per_class(tmp_path):
    root = make_classify_dataset(tmp_path / "a", n_train=8, n_val=4, imgsz=48)
    same_files(root, make_classify_dataset(tmp_path / "b", n_train=8, n_val=4, imgsz=48))
    assert root == tmp_path / "a" and sorted(p.name for p in root.iterdir()) == ["train", "val"]
    folders = sorted(name.replace(" ", "_") for name in CLASSES)
    for split, n in (("train", 8), ("val", 4)):
        assert sorted(p.name for p in (root / split).iterdir()) == folders
        counts = [len(list((root / split / f).glob("*.jpg"))) for f in folders]
        assert counts == [n // len(folders)] * len(folders)  # balanced
    img = cv2.imread(str(next((root / "val/red_square").glob("*.jpg"))))
    assert img.shape == (48, 48, 3)
    assert (np.abs(img[18:30, 18:30].astype(int) - COLOURS[0]).max(2) < 60).mean() > 0.5  # a red shape in the centre


def test_make_task_dataset_returns_what_data_takes(tmp_path):
    kw = dict(n_train=2, n_val=1, imgsz=32)
    for task in ("detect", "segment", "pose", "obb"):
        out = make_task_dataset(task, tmp_path / task, **kw)
        assert out == tmp_path / task / "data.yaml" and out.is_file()
    assert "kpt_shape" in (tmp_path / "pose/data.yaml").read_text()
    assert make_task_dataset("classify", tmp_path / "cls", **kw) == tmp_path / "cls"
    with pytest.raises(ValueError, match="task='track'"):
        make_task_dataset("track", tmp_path / "x")

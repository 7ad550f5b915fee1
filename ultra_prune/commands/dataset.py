"""Small datasets generated in code (no downloads): coloured shapes on noisy backgrounds, for every ultralytics task
(detect, segment, pose, obb, classify)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("red square", "green disc", "blue triangle", "yellow cross")
COLOURS = ((40, 40, 220), (40, 200, 40), (220, 60, 40), (30, 220, 230))  # BGR, as cv2 writes
DISC_POINTS = 16  # the vertices of a disc's polygon in segmentation labels


def _outline(cls, x0, y0, s) -> np.ndarray:
    """The outline, in pixels, of the shape ``_draw`` draws: a polygon of DISC_POINTS for the disc, 4 corners for the
    square, 3 for the triangle, 12 for the cross."""
    if cls == 1:
        a = np.linspace(0, 2 * np.pi, DISC_POINTS, endpoint=False)
        return np.stack([x0 + s // 2 + s // 2 * np.cos(a), y0 + s // 2 + s // 2 * np.sin(a)], 1)
    if cls == 0:
        pts = [(0, 0), (s, 0), (s, s), (0, s)]
    elif cls == 2:
        pts = [(s // 2, 0), (0, s), (s, s)]
    else:
        t = max(s // 4, 1)
        a, b = s // 2 - t // 2, s // 2 + t // 2 + 1  # the bars' edges
        pts = [(a, 0), (b, 0), (b, a), (s, a), (s, b), (b, b), (b, s), (a, s), (a, b), (0, b), (0, a), (a, a)]
    return np.array(pts, np.int32) + np.array([x0, y0], np.int32)


def _draw(img, cls, x0, y0, s):
    import cv2

    if cls == 1:
        cv2.circle(img, (x0 + s // 2, y0 + s // 2), s // 2, COLOURS[cls], -1)
    else:
        cv2.fillPoly(img, [_outline(cls, x0, y0, s)], COLOURS[cls])


def _rotated(pts, angle: float, centre) -> np.ndarray:
    """``pts`` (relative to ``centre``) rotated by ``angle`` degrees about it, in pixels."""
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.array(pts, dtype=float) @ rot.T + np.array(centre)


def _fill(img, poly, colour) -> None:
    import cv2

    cv2.fillPoly(img, [poly.round().astype(np.int32)], colour)


def _background(rng, imgsz: int):
    """Blurred uniform noise."""
    import cv2

    return cv2.GaussianBlur(rng.integers(60, 140, (imgsz, imgsz, 3), dtype=np.uint8), (5, 5), 0)


def _spots(rng, imgsz: int, most: int):
    """1 to ``most`` non-overlapping squares ``(x0, y0, s)`` inside the image, fewer where a draw overlaps."""
    taken = []
    for _ in range(int(rng.integers(1, most + 1))):
        s = int(rng.integers(imgsz // 8, imgsz // 3))
        x0, y0 = (int(v) for v in rng.integers(0, imgsz - s, 2))
        if any(x0 < bx + bs and bx < x0 + s and y0 < by + bs and by < y0 + s for bx, by, bs in taken):
            continue
        taken.append((x0, y0, s))
        yield x0, y0, s


def _images(root: Path, n_train: int, n_val: int):
    """``(split, index)`` of every image to write, each split's folders made first."""
    for split, n in (("train", n_train), ("val", n_val)):
        for kind in ("images", "labels"):
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            yield split, i


def _save(root: Path, split: str, i: int, img, lines: list[str]) -> None:
    import cv2

    cv2.imwrite(str(root / "images" / split / f"{i:05d}.jpg"), img)
    (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")


def _data_yaml(root: Path, names, **extra) -> Path:
    """Write ``root/data.yaml``; ``extra`` adds top-level keys (lists are written as YAML flow sequences)."""
    listing = "\n".join(f"  {i}: {name}" for i, name in enumerate(names))
    more = "".join(f"{k}: {v}\n" for k, v in extra.items())
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\n{more}names:\n{listing}\n")
    return yaml


def _numbers(cls: int, values) -> str:
    """One label line: the class, then ``values`` (already normalised)."""
    return " ".join([str(cls)] + [f"{v:.6f}" for v in values])


def _scenes(root, n_train: int, n_val: int, imgsz: int, seed: int, most: int, obj) -> Path:
    """Write noisy images with up to ``most`` non-overlapping objects each, under ``root``; ``obj(rng, img, x0, y0, s)``
    draws one object into the square ``(x0, y0, s)`` and returns its label line. Returns ``root`` as a Path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, i in _images(root, n_train, n_val):
        img = _background(rng, imgsz)
        _save(root, split, i, img, [obj(rng, img, x0, y0, s) for x0, y0, s in _spots(rng, imgsz, most)])
    return root


def _check_nc(nc: int) -> None:
    if not 1 <= nc <= len(CLASSES):
        raise ValueError(f"nc={nc} is out of range [1, {len(CLASSES)}]")


def make_dataset(root, n_train: int = 256, n_val: int = 64, imgsz: int = 160, nc: int = len(CLASSES),
                 seed: int = 0) -> Path:
    """Write images and YOLO labels under ``root`` and return the path of its ``data.yaml``.

    Each image holds 1-4 non-overlapping shapes of ``nc`` classes; the same arguments give the same files.
    """
    _check_nc(nc)

    def box(rng, img, x0, y0, s):
        cls = int(rng.integers(0, nc))
        _draw(img, cls, x0, y0, s)
        return _numbers(cls, np.array([x0 + s / 2, y0 + s / 2, s, s]) / imgsz)

    return _data_yaml(_scenes(root, n_train, n_val, imgsz, seed, 4, box), CLASSES[:nc])


HARD_SHAPES = ("square", "disc", "triangle", "cross", "ring")
HARD_CLASSES = tuple(f"{tone} {shape}" for shape in HARD_SHAPES for tone in ("warm", "cool"))


def _draw_hard(img, shape: int, x0, y0, s, colour, angle: float) -> None:
    """One of HARD_SHAPES, rotated by ``angle`` degrees, in ``colour`` (BGR)."""
    import cv2

    c, r = (x0 + s / 2, y0 + s / 2), s / 2
    if shape == 1:
        cv2.circle(img, (int(c[0]), int(c[1])), int(r), colour, -1)
        return
    if shape == 4:
        cv2.circle(img, (int(c[0]), int(c[1])), int(r), colour, max(int(s / 5), 1))
        return
    if shape == 0:
        pts = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape == 2:
        pts = [(0, -r), (-r, r), (r, r)]
    else:
        t = r / 3
        pts = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t)]
    _fill(img, _rotated(pts, angle, c), colour)


def make_hard_dataset(root, n_train: int = 1000, n_val: int = 200, imgsz: int = 160, seed: int = 0) -> Path:
    """A harder dataset, where model size matters: 10 classes (5 shapes x a warm or a cool tone, with colour
    jitter), 4-24 small and partly overlapping objects per image, rotated, on textured backgrounds with unlabelled
    grey distractor shapes. Returns the path of its ``data.yaml``; the same arguments give the same files."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, i in _images(root, n_train, n_val):
        img = rng.integers(40, 200, (imgsz // 8, imgsz // 8, 3), dtype=np.uint8)
        img = cv2.resize(img, (imgsz, imgsz), interpolation=cv2.INTER_CUBIC)
        img = np.clip(img.astype(np.int16) + rng.integers(-25, 25, img.shape), 0, 255).astype(np.uint8)
        for _ in range(int(rng.integers(2, 8))):  # distractors: grey shapes, not labelled
            s = int(rng.integers(imgsz // 16, imgsz // 5))
            x0, y0 = (int(v) for v in rng.integers(0, imgsz - s, 2))
            g = int(rng.integers(70, 180))
            _draw_hard(img, int(rng.integers(0, 5)), x0, y0, s, (g, g, g), float(rng.uniform(0, 360)))
        lines = []
        for _ in range(int(rng.integers(4, 25))):
            s = int(rng.integers(max(imgsz // 20, 4), imgsz // 6))
            x0, y0 = (int(v) for v in rng.integers(0, imgsz - s, 2))
            shape, warm = int(rng.integers(0, 5)), bool(rng.integers(0, 2))
            hue = rng.uniform(0, 30) if warm else rng.uniform(90, 130)  # OpenCV hue: reds/oranges vs blues
            hsv = np.uint8([[[hue, rng.integers(120, 256), rng.integers(120, 256)]]])
            colour = tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
            _draw_hard(img, shape, x0, y0, s, colour, float(rng.uniform(0, 360)))
            cls = shape * 2 + (0 if warm else 1)
            lines.append(f"{cls} {(x0 + s / 2) / imgsz:.6f} {(y0 + s / 2) / imgsz:.6f} {s / imgsz:.6f} {s / imgsz:.6f}")
        _save(root, split, i, img, lines)
    return _data_yaml(root, HARD_CLASSES)


def make_segment_dataset(root, n_train: int = 64, n_val: int = 16, imgsz: int = 96, nc: int = len(CLASSES),
                         seed: int = 0) -> Path:
    """``make_dataset``'s shapes with YOLO segmentation labels (the class, then the normalised polygon of the shape:
    see ``_outline``). Returns the path of ``data.yaml``; the same arguments give the same files."""
    _check_nc(nc)

    def polygon(rng, img, x0, y0, s):
        cls = int(rng.integers(0, nc))
        _draw(img, cls, x0, y0, s)
        return _numbers(cls, (_outline(cls, x0, y0, s) / imgsz).ravel())

    return _data_yaml(_scenes(root, n_train, n_val, imgsz, seed, 4, polygon), CLASSES[:nc])


POSE_CLASSES = ("triangle",)
# A thin isosceles triangle (30 degrees at the apex) inscribed in the unit circle, so that any rotation stays in its
# square: the apex, then the base corners in a fixed turning order, so that a left/right flip swaps the base corners.
POSE_TRIANGLE = ((0.0, -1.0), (-0.5, 0.75 ** 0.5), (0.5, 0.75 ** 0.5))
POSE_FLIP_IDX = (0, 2, 1)


def make_pose_dataset(root, n_train: int = 64, n_val: int = 16, imgsz: int = 96, seed: int = 0) -> Path:
    """One class of rotated thin triangles whose corners are the keypoints (apex, then the two base corners),
    with YOLO pose labels (class, box, then x y visibility per keypoint). ``data.yaml`` has ``kpt_shape: [3, 3]``
    and the matching ``flip_idx``. Returns its path; the same arguments give the same files."""

    def triangle(rng, img, x0, y0, s):
        colour = COLOURS[int(rng.integers(0, len(COLOURS)))]
        pts = _rotated(np.array(POSE_TRIANGLE) * (s / 2), float(rng.uniform(0, 360)), (x0 + s / 2, y0 + s / 2))
        _fill(img, pts, colour)
        (x1, y1), (x2, y2) = pts.min(0), pts.max(0)
        kpts = np.concatenate([pts / imgsz, np.full((len(pts), 1), 2.0)], 1)  # all visible
        return _numbers(0, np.concatenate([np.array([x1 + x2, y1 + y2, 2 * (x2 - x1), 2 * (y2 - y1)]) / (2 * imgsz),
                                           kpts.ravel()]))

    root = _scenes(root, n_train, n_val, imgsz, seed, 3, triangle)
    return _data_yaml(root, POSE_CLASSES, kpt_shape=[len(POSE_TRIANGLE), 3], flip_idx=list(POSE_FLIP_IDX))


OBB_CLASSES = tuple(f"{name.split()[0]} bar" for name in CLASSES)


def make_obb_dataset(root, n_train: int = 64, n_val: int = 16, imgsz: int = 96, seed: int = 0) -> Path:
    """Rotated rectangles (aspect 1:4 to 2:3) in the four colours of CLASSES, one class per colour, with ultralytics
    OBB labels (class, then the 4 normalised corners). Returns the path of ``data.yaml``; the same arguments give
    the same files."""

    def bar(rng, img, x0, y0, s):
        cls = int(rng.integers(0, len(OBB_CLASSES)))
        phi = np.arctan(rng.uniform(0.25, 2 / 3))  # the diagonal's angle: the corners lie on the square's inner circle
        w, h = s / 2 * np.cos(phi), s / 2 * np.sin(phi)
        pts = _rotated([(-w, -h), (w, -h), (w, h), (-w, h)], float(rng.uniform(0, 180)), (x0 + s / 2, y0 + s / 2))
        _fill(img, pts, COLOURS[cls])
        return _numbers(cls, (pts / imgsz).ravel())

    return _data_yaml(_scenes(root, n_train, n_val, imgsz, seed, 4, bar), OBB_CLASSES)


def make_classify_dataset(root, n_train: int = 64, n_val: int = 16, imgsz: int = 96, seed: int = 0) -> Path:
    """One roughly centred shape per image, the classes (CLASSES, spaces as underscores) taking turns, written as
    ``root/{train,val}/<class>/*.jpg``. Returns ``root``, which is what ultralytics' classify ``data=`` takes; the
    same arguments give the same files."""
    import cv2

    root = Path(root)
    rng = np.random.default_rng(seed)
    folders = [name.replace(" ", "_") for name in CLASSES]
    for split, n in (("train", n_train), ("val", n_val)):
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cls = i % len(CLASSES)
            s = int(rng.integers(imgsz // 3, imgsz * 2 // 3))
            x0, y0 = (int(v) for v in (imgsz - s) // 2 + rng.integers(-imgsz // 10, imgsz // 10 + 1, 2))
            img = _background(rng, imgsz)
            _draw(img, cls, x0, y0, s)
            cv2.imwrite(str(root / split / folders[cls] / f"{i:05d}.jpg"), img)
    return root


TASKS = {"detect": make_dataset, "segment": make_segment_dataset, "pose": make_pose_dataset,
         "obb": make_obb_dataset, "classify": make_classify_dataset}


def make_task_dataset(task: str, root, **kw) -> Path:
    """The generated dataset for an ultralytics ``task`` (see TASKS), written under ``root``; returns what that task's
    ``data=`` takes (``data.yaml``, or for classify the dataset folder). ``kw`` goes to the task's maker."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not one of {sorted(TASKS)}")
    return TASKS[task](root, **kw)

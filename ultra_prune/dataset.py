"""A small detection dataset generated in code (no downloads): coloured shapes on noisy backgrounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("red square", "green disc", "blue triangle", "yellow cross")
COLOURS = ((40, 40, 220), (40, 200, 40), (220, 60, 40), (30, 220, 230))  # BGR, as cv2 writes


def _draw(img, cls, x0, y0, s):
    import cv2

    c = COLOURS[cls]
    if cls == 0:
        cv2.rectangle(img, (x0, y0), (x0 + s, y0 + s), c, -1)
    elif cls == 1:
        cv2.circle(img, (x0 + s // 2, y0 + s // 2), s // 2, c, -1)
    elif cls == 2:
        pts = np.array([[x0 + s // 2, y0], [x0, y0 + s], [x0 + s, y0 + s]], np.int32)
        cv2.fillPoly(img, [pts], c)
    else:
        t = max(s // 4, 1)
        cv2.rectangle(img, (x0, y0 + s // 2 - t // 2), (x0 + s, y0 + s // 2 + t // 2 + 1), c, -1)
        cv2.rectangle(img, (x0 + s // 2 - t // 2, y0), (x0 + s // 2 + t // 2 + 1, y0 + s), c, -1)


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


def _data_yaml(root: Path, names) -> Path:
    listing = "\n".join(f"  {i}: {name}" for i, name in enumerate(names))
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{listing}\n")
    return yaml


def make_dataset(root, n_train: int = 256, n_val: int = 64, imgsz: int = 160, nc: int = len(CLASSES),
                 seed: int = 0) -> Path:
    """Write images and YOLO labels under ``root`` and return the path of its ``data.yaml``.

    Each image holds 1-4 non-overlapping shapes of ``nc`` classes; the same arguments give the same files.
    """
    import cv2

    if not 1 <= nc <= len(CLASSES):
        raise ValueError(f"nc={nc} is out of range [1, {len(CLASSES)}]")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, i in _images(root, n_train, n_val):
        img = rng.integers(60, 140, (imgsz, imgsz, 3), dtype=np.uint8)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        boxes = []
        for _ in range(int(rng.integers(1, 5))):
            s = int(rng.integers(imgsz // 8, imgsz // 3))
            x0, y0 = (int(v) for v in rng.integers(0, imgsz - s, 2))
            if any(x0 < bx + bs and bx < x0 + s and y0 < by + bs and by < y0 + s for _, bx, by, bs in boxes):
                continue
            cls = int(rng.integers(0, nc))
            _draw(img, cls, x0, y0, s)
            boxes.append((cls, x0, y0, s))
        _save(root, split, i, img, [f"{c} {(x + s / 2) / imgsz:.6f} {(y + s / 2) / imgsz:.6f} {s / imgsz:.6f} "
                                    f"{s / imgsz:.6f}" for c, x, y, s in boxes])
    return _data_yaml(root, CLASSES[:nc])


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
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    poly = (np.array(pts) @ rot.T + np.array(c)).round().astype(np.int32)
    cv2.fillPoly(img, [poly], colour)


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

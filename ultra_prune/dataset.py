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
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
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
            cv2.imwrite(str(root / "images" / split / f"{i:05d}.jpg"), img)
            lines = [f"{c} {(x + s / 2) / imgsz:.6f} {(y + s / 2) / imgsz:.6f} {s / imgsz:.6f} {s / imgsz:.6f}"
                     for c, x, y, s in boxes]
            (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES[:nc]))
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return yaml

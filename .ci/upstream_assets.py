"""Offline stand-ins for the assets ultralytics' own tests download: checkpoints and tiny datasets, made in code.

Run by ``upstream_suite.py`` in a child interpreter with ``ULTRA_PRUNE_DISABLE=1``, so every checkpoint is written by
stock ultralytics (random init from the packaged model yamls, saved the way a finished training run saves it: a
checkpoint with ``train_args``, then ``strip_optimizer``). The datasets go where ultralytics' packaged dataset yamls
(``cfg/datasets/coco8.yaml`` ...) point: ``<datasets_dir>/<path:>`` with the splits, class counts and keypoint shape
those yamls declare, so ``data="coco8.yaml"`` finds them and no download is attempted.

    python upstream_assets.py WEIGHTS_DIR DATASETS_DIR
"""

from __future__ import annotations

import shutil
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np

N_TRAIN, N_VAL = 4, 4  # images per split, as in the real coco8/dota8/...
W, H = 96, 64  # non-square, as coco8's images are


def _yaml(name: str) -> dict:
    from ultralytics.utils import ROOT, YAML

    return YAML.load(ROOT / "cfg" / "datasets" / name)


def _background(rng) -> np.ndarray:
    return cv2.GaussianBlur(rng.integers(40, 200, (H, W, 3), dtype=np.uint8), (5, 5), 0)


def _boxes(rng, most: int = 3):
    """1 to ``most`` boxes ``(x0, y0, x1, y1)`` in pixels, each at least 12 px a side."""
    for _ in range(int(rng.integers(1, most + 1))):
        w, h = int(rng.integers(12, W // 2)), int(rng.integers(12, H // 2))
        x0, y0 = int(rng.integers(0, W - w)), int(rng.integers(0, H - h))
        yield x0, y0, x0 + w, y0 + h


def _colour(rng):
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _splits(root: Path, *kinds: str):
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        for kind in kinds:
            (root / kind / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            yield split, f"{split}_{i:03d}"


def _line(cls: int, values) -> str:
    return " ".join([str(cls), *(f"{min(max(v, 0.0), 1.0):.6f}" for v in values)])


def make_detect_like(root: Path, task: str, nc: int, nkpt: int = 0) -> None:
    """YOLO-format images/labels for detect, segment (ellipse polygons), pose (``nkpt`` keypoints in the box) and
    obb (rotated rectangles as 4 corners)."""
    rng = np.random.default_rng(zlib.crc32(root.name.encode()))
    for split, stem in _splits(root, "images", "labels"):
        img, lines = _background(rng), []
        for x0, y0, x1, y1 in _boxes(rng):
            cls, colour = int(rng.integers(0, nc)), _colour(rng)
            cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0
            if task == "obb":
                rect = ((cx, cy), (bw * 0.8, bh * 0.5), float(rng.uniform(0, 90)))
                pts = cv2.boxPoints(rect)
                cv2.fillPoly(img, [pts.round().astype(np.int32)], colour)
                lines.append(_line(cls, (pts / [W, H]).ravel()))
                continue
            if task == "segment":
                a = np.linspace(0, 2 * np.pi, 12, endpoint=False)
                pts = np.stack([cx + bw / 2 * np.cos(a), cy + bh / 2 * np.sin(a)], 1)
                cv2.fillPoly(img, [pts.round().astype(np.int32)], colour)
                lines.append(_line(cls, (pts / [W, H]).ravel()))
                continue
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
            box = [cx / W, cy / H, bw / W, bh / H]
            if task == "pose":
                kx = rng.uniform(x0 + 1, x1 - 1, nkpt) / W
                ky = rng.uniform(y0 + 1, y1 - 1, nkpt) / H
                kpts = np.stack([kx, ky, np.full(nkpt, 2.0)], 1).ravel()  # all visible
                lines.append(_line(0, [*box, *kpts]))
            else:
                lines.append(_line(cls, box))
        cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), img)
        (root / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + "\n")


def make_semantic(root: Path, raw_ids: list[int]) -> None:
    """Images with PNG masks of raw label ids (mapped by the yaml's ``label_mapping``); 0 (ignored) elsewhere."""
    rng = np.random.default_rng(1)
    for split, stem in _splits(root, "images", "masks"):
        img, mask = _background(rng), np.full((H, W), raw_ids[0], np.uint8)
        mask[: H // 4] = 0  # an ignored band
        for x0, y0, x1, y1 in _boxes(rng):
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), _colour(rng), -1)
            mask[y0:y1, x0:x1] = raw_ids[int(rng.integers(1, len(raw_ids)))]
        cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), img)
        cv2.imwrite(str(root / "masks" / split / f"{stem}.png"), mask)


def make_depth(root: Path) -> None:
    """Images with 16-bit PNG depth maps (millimetres, never 0 = invalid)."""
    rng = np.random.default_rng(2)
    for split, stem in _splits(root, "images", "depth"):
        img = _background(rng)
        depth = np.tile(np.linspace(500, 5000, W, dtype=np.float32), (H, 1))
        for x0, y0, x1, y1 in _boxes(rng):
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), _colour(rng), -1)
            depth[y0:y1, x0:x1] = rng.uniform(300, 3000)
        cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), img)
        cv2.imwrite(str(root / "depth" / split / f"{stem}.png"), depth.astype(np.uint16))


def make_classify(root: Path, folders: list[str], per_class: dict[str, int]) -> None:
    """``root/{train,val}/<folder>/*.jpg``, one filled shape per image."""
    rng = np.random.default_rng(3)
    for split, n in per_class.items():
        for k, folder in enumerate(folders):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = _background(rng)
                cv2.circle(img, (W // 2, H // 2), 8 + 2 * k, _colour(rng), -1)
                cv2.imwrite(str(root / split / folder / f"{i:03d}.jpg"), img)


def make_datasets(datasets_dir: Path) -> list[str]:
    """The datasets of ultralytics' TASK2DATA, under the roots their packaged yamls name. Returns what was made."""
    made = []
    for yaml_name, task in (("coco8.yaml", "detect"), ("coco8-seg.yaml", "segment"), ("coco8-pose.yaml", "pose"),
                            ("dota8.yaml", "obb")):
        data = _yaml(yaml_name)
        nkpt = data.get("kpt_shape", [0])[0]
        make_detect_like(datasets_dir / data["path"], task, len(data["names"]), nkpt)
        made.append(f"{yaml_name} -> {data['path']} ({task}, nc={len(data['names'])}{f', kpt={nkpt}' if nkpt else ''})")

    data = _yaml("cityscapes8.yaml")
    mapping = {int(k): v for k, v in data["label_mapping"].items()}
    raw = sorted(k for k, v in mapping.items() if isinstance(v, int) and k >= 0)  # ids that map to a train id
    make_semantic(datasets_dir / data["path"], raw[:6])
    made.append(f"cityscapes8.yaml -> {data['path']} (semantic, raw ids {raw[:6]})")

    data = _yaml("depth8.yaml")
    make_depth(datasets_dir / data["path"])
    made.append(f"depth8.yaml -> {data['path']} (depth)")

    synsets = list(_yaml("ImageNet.yaml")["map"])[:10]  # imagenet10: the first 10 ImageNet classes
    make_classify(datasets_dir / "imagenet10", synsets, {"train": 2, "val": 1})
    made.append(f"imagenet10 -> imagenet10 (classify, {len(synsets)} synset folders)")
    return made


# name -> (model yaml, task, dataset yaml whose names the checkpoint carries, input channels)
WEIGHTS = {
    "yolo26n.pt": ("yolo26n.yaml", "detect", "coco8.yaml", 3),
    "yolo26n-seg.pt": ("yolo26n-seg.yaml", "segment", "coco8-seg.yaml", 3),
    "yolo26n-pose.pt": ("yolo26n-pose.yaml", "pose", "coco8-pose.yaml", 3),
    "yolo26n-obb.pt": ("yolo26n-obb.yaml", "obb", "dota8.yaml", 3),
    "yolo26n-cls.pt": ("yolo26n-cls.yaml", "classify", "ImageNet.yaml", 3),
    "yolo26n-sem.pt": ("yolo26n-sem.yaml", "semantic", "cityscapes8.yaml", 3),
    "yolo26n-depth.pt": ("yolo26n-depth.yaml", "depth", "depth8.yaml", 3),
    "yolo11n.pt": ("yolo11n.yaml", "detect", "coco8.yaml", 3),
    "yolo11n-grayscale.pt": ("yolo11n.yaml", "detect", "coco8.yaml", 1),
    # the distillation teachers of test_cli.py::test_distill and test_engine.py::test_distill_resume
    "yolo26s.pt": ("yolo26s.yaml", "detect", "coco8.yaml", 3),
    "yolo26s-seg.pt": ("yolo26s-seg.yaml", "segment", "coco8-seg.yaml", 3),
    "yolo26s-pose.pt": ("yolo26s-pose.yaml", "pose", "coco8-pose.yaml", 3),
    "yolo26s-obb.pt": ("yolo26s-obb.yaml", "obb", "dota8.yaml", 3),
}
DATA_FOR = {"coco8.yaml": "coco8.yaml", "coco8-seg.yaml": "coco8-seg.yaml", "coco8-pose.yaml": "coco8-pose.yaml",
            "dota8.yaml": "dota8.yaml", "ImageNet.yaml": "imagenet10", "cityscapes8.yaml": "cityscapes8.yaml",
            "depth8.yaml": "depth8.yaml"}


def make_checkpoint(file: Path, cfg: str, task: str, data_yaml: str, ch: int) -> None:
    """A checkpoint as a finished stock training run leaves it (``train_args``, EMA model, then strip_optimizer)."""
    import torch

    from ultralytics import YOLO, __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.utils.torch_utils import strip_optimizer

    data = _yaml(data_yaml)
    names = data["names"]
    names = dict(enumerate(names.values() if isinstance(names, dict) else names))
    model_cls = YOLO(cfg, task=task).task_map[task]["model"]
    kw = {"data_kpt_shape": tuple(data["kpt_shape"])} if task == "pose" else {}
    model = model_cls(cfg, ch=ch, nc=len(names), verbose=False, **kw)
    model.names = names
    args = vars(get_cfg(overrides={"model": cfg, "data": DATA_FOR[data_yaml], "task": task, "epochs": 1}))
    model.args = args
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": model, "updates": 0, "optimizer": None,
                "train_args": args, "train_metrics": {}, "version": __version__}, file)
    strip_optimizer(file)


def make_weights(weights_dir: Path) -> list[str]:
    """WEIGHTS under ``weights_dir``, the task models also under ``weights_dir/path with spaces`` (tests.MODEL), and
    the boats.jpg that test_results takes from the solution assets (a copy of the packaged bus.jpg)."""
    from ultralytics.cfg import TASK2MODEL
    from ultralytics.utils import ASSETS

    weights_dir.mkdir(parents=True, exist_ok=True)
    for name, (cfg, task, data_yaml, ch) in WEIGHTS.items():
        make_checkpoint(weights_dir / name, cfg, task, data_yaml, ch)
    spaces = weights_dir / "path with spaces"
    spaces.mkdir(exist_ok=True)
    for name in TASK2MODEL.values():
        shutil.copy2(weights_dir / name, spaces / name)
    (weights_dir / "solution_assets").mkdir(exist_ok=True)
    shutil.copy2(ASSETS / "bus.jpg", weights_dir / "solution_assets" / "boats.jpg")
    return [*WEIGHTS, *(f"path with spaces/{n}" for n in TASK2MODEL.values()), "solution_assets/boats.jpg"]


def main() -> None:
    weights_dir, datasets_dir = (Path(a) for a in sys.argv[1:3])
    import ultralytics

    assert not getattr(ultralytics, "_ultra_prune_patched", False), "assets must be made by stock ultralytics"
    for line in make_datasets(datasets_dir):
        print(f"  dataset {line}")
    print(f"  weights {', '.join(make_weights(weights_dir))}")


if __name__ == "__main__":
    main()

"""Taylor scores of a model's channels from a few batches of its training data (``prune_importance=taylor``).

The model is run as it is deployed (eval mode: BatchNorm statistics fixed and untouched) on ``BATCHES`` batches of
the training split, without augmentation, drawn in one fixed random order (so every DDP rank scores, and prunes,
alike); the loss is ultralytics' own for the model's task.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from ultra_prune.io.device import as_device
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning.importance import TaylorScores

BATCHES = 32  # 512 images at batch 16 (the setting bench_importance.py measured)


def _loader(model: nn.Module, data, imgsz: int, batch: int):
    """A shuffled (fixed seed), unaugmented loader of ``data``'s training split for ``model``'s task, and its
    config."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import guess_model_task

    task = guess_model_task(model)
    cfg = get_cfg(overrides={"task": task, "imgsz": imgsz, "data": str(data), "batch": batch})
    try:
        if task == "classify":
            from ultralytics.data import ClassificationDataset
            from ultralytics.data.utils import check_cls_dataset

            dataset = ClassificationDataset(root=str(check_cls_dataset(str(data))["train"]), args=cfg, augment=False)
        else:
            from ultralytics.data import build_yolo_dataset
            from ultralytics.data.utils import check_det_dataset

            info = check_det_dataset(str(data))
            stride = max(int(model.stride.max()), 32)
            dataset = build_yolo_dataset(cfg, info["train"], batch, info, mode="val", stride=stride)
    except Exception as e:  # ultralytics raises several kinds for a missing or malformed dataset
        raise UltraPruneError(f"prune_importance=taylor could not read the training data '{data}' ({e}); give the "
                              "data= of the model's training run, or use prune_importance=l1") from None
    loader = torch.utils.data.DataLoader(dataset, batch, shuffle=True, generator=torch.Generator().manual_seed(0),
                                         collate_fn=getattr(dataset, "collate_fn", None))
    return loader, cfg


def taylor_scores(model: nn.Module, data, imgsz: int = 640, batch: int = 16, batches: int = BATCHES,
                  device=None) -> TaylorScores:
    """First-order Taylor scores ``|gamma*dL/dgamma + beta*dL/dbeta|`` of every BatchNorm channel of ``model``,
    summed over ``batches`` batches of ``data``'s training split, computed on ``device`` (default: the model's)
    (``model`` itself is not changed)."""
    from ultralytics.utils import TQDM, colorstr

    loader, cfg = _loader(model, data, imgsz, batch)
    device = as_device(device) or next(model.parameters()).device
    net = copy.deepcopy(model).float().eval().to(device)
    net.args = cfg  # the loss reads its gains (box, cls, dfl, ...) here
    for p in net.parameters():
        p.requires_grad_(False)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d) and m.affine:
            m.weight.requires_grad_(True)
            m.bias.requires_grad_(True)
    scores = TaylorScores()
    n = min(batches, len(loader))
    for b in TQDM(itertools.islice(loader, n), desc=f"{colorstr('ultra-prune:')} Taylor scores", total=n):
        b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        if not b["img"].dtype.is_floating_point:  # detection-style loaders give uint8 images
            b["img"] = b["img"].float() / 255
        net.zero_grad(set_to_none=True)
        loss = net.loss(b)[0]
        loss.sum().backward()
        scores.observe(net)
    return scores

"""One forward pass of a zero image through a model, with forward hooks on chosen modules (widths, pixel counts).

Knows torch only.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def input_channels(model: nn.Module) -> int:
    """The image channels ``model`` takes (its yaml's ``ch``, else 3)."""
    return model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3


@torch.no_grad()
def forward_zeros(model: nn.Module, imgsz: int, hooks: dict[nn.Module, Callable]) -> None:
    """Run ``model`` in eval mode on one ``imgsz`` x ``imgsz`` zero image with ``hooks`` (module -> forward hook)
    registered; the hooks and the model's training mode are restored afterwards."""
    handles = [m.register_forward_hook(h) for m, h in hooks.items()]
    training = model.training
    try:
        model.eval()
        p = next(model.parameters())
        model(torch.zeros(1, input_channels(model), imgsz, imgsz, dtype=p.dtype, device=p.device))
    finally:
        for h in handles:
            h.remove()
        model.train(training)

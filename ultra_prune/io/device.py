"""Device arguments, read as ultralytics reads them (``0``, ``"0"``, ``"cuda:0"``, ``"cpu"``, a ``torch.device``)."""

from __future__ import annotations


def as_device(device):
    """``device`` as a ``torch.device`` chosen by ultralytics' own ``select_device`` (a ``torch.device``, such as a
    trainer's, passes through as it is; None stays None)."""
    import torch

    if device is None or isinstance(device, torch.device):
        return device
    from ultralytics.utils.torch_utils import select_device

    return torch.device(select_device(str(device), verbose=False))

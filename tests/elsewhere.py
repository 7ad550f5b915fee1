"""A stand-in accelerator for a machine without one: tensors that say they are on ``cuda:0`` and follow CUDA's
device rules, so code that mixes devices fails here as it would on its first GPU run.

``OnDevice`` is a CPU tensor whose ``device`` reads ``cuda:0``; inside ``elsewhere()`` every torch call checks what
CUDA checks: the tensors of one op share a device (0-d CPU tensors excepted), an index on the accelerator may not
index a CPU tensor (a CPU index may index either), ``copy_`` crosses devices, factories and ``.to``/``.cuda``
called with ``cuda:0`` give ``OnDevice`` tensors and ``.cpu()`` gives plain ones. ``put(module)`` moves a module's
parameters and buffers there in place. The data stay on the CPU, so results are the CPU results exactly.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

DEVICE = torch.device("cuda", 0)
INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_select, torch.index_select}
COPIES = {torch.Tensor.copy_}


class OnDevice(torch.Tensor):
    """A CPU tensor that stands for one on ``DEVICE``."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    @property
    def device(self):
        return DEVICE


def _there(t) -> bool:
    return isinstance(t, OnDevice)


def _plain(t):
    return t.as_subclass(torch.Tensor) if _there(t) else t


def _wrap(t):
    return t.as_subclass(OnDevice) if isinstance(t, torch.Tensor) and not _there(t) else t


def _is_device(d) -> bool:
    return d is not None and torch.device(d) == DEVICE


def _to(func, args, kwargs):
    """``Tensor.to`` / ``.cuda`` / ``.cpu``: where the result lives, and the plain call that makes it."""
    self, rest = args[0], list(args[1:])
    if func is torch.Tensor.cpu:
        return False, _plain(self).clone() if _there(self) else self
    if func is torch.Tensor.cuda:
        return True, _plain(self)
    target = kwargs.pop("device", None)
    if rest and isinstance(rest[0], torch.Tensor):
        other = rest.pop(0)
        target, rest = other.device, [other.dtype, *rest]
    elif rest and isinstance(rest[0], (str, torch.device, int)):
        target = rest.pop(0)
    there = _there(self) if target is None else _is_device(target)
    return there, _plain(self).to(*rest, **kwargs)


def _deepcopy(t, memo):
    out = _plain(t).detach().clone().as_subclass(type(t))
    if getattr(t, "_is_param", False):
        out.requires_grad_(t.requires_grad)
        out._is_param = True
    memo[id(t)] = out
    return out


def _check(func, args, kwargs) -> None:
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    if func in COPIES or not any(_there(t) for t in tensors):
        return
    if func in INDEXING:
        self, index = args[0], args[1]
        if not _there(self) and any(_there(t) for t in tree_flatten(index)[0] if isinstance(t, torch.Tensor)):
            raise RuntimeError("indices should be either on cpu or on the same device as the indexed tensor (cpu)")
        value = args[2] if len(args) > 2 else None
        if _there(self) or not (_there(value) and value.dim() > 0):
            return
    if any(not _there(t) and t.dim() > 0 for t in tensors):
        raise RuntimeError(f"{getattr(func, '__name__', func)}: Expected all tensors to be on the same device, but "
                           f"found at least two devices, {DEVICE} and cpu!")


class Elsewhere(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.type_as:
            func, args = torch.Tensor.to, args
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            there, out = _to(func, args, kwargs)
            return _wrap(out) if there else _plain(out)
        if func is torch.Tensor.__deepcopy__:
            return _deepcopy(*args)
        if _is_device(kwargs.get("device")):  # a factory asked for the accelerator
            kwargs["device"] = "cpu"
            return tree_map(_wrap, func(*args, **kwargs))
        _check(func, args, kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        out = func(*args, **kwargs)
        if any(_there(t) for t in inputs):
            out = tree_map(lambda t: t if any(t is i for i in inputs) else _wrap(t), out)
        return out


@contextlib.contextmanager
def elsewhere():
    """Torch calls in the block follow the stand-in accelerator's device rules."""
    with Elsewhere():
        yield DEVICE


def put(module: nn.Module) -> nn.Module:
    """``module`` with every parameter, buffer and tensor attribute moved to the stand-in accelerator, in place."""
    with Elsewhere():
        _put(module)
    return module


def _put(module: nn.Module) -> None:
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(p.detach().as_subclass(OnDevice), p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = b.as_subclass(OnDevice)
        for name, v in list(vars(m).items()):  # tensors a model moves itself (ultralytics' head strides, anchors)
            if isinstance(v, torch.Tensor):
                setattr(m, name, _wrap(v))

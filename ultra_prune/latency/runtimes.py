"""The runtimes a model's latency is measured on here (``latency_runtime=``, ``latency_precision=``): onnxruntime,
OpenVINO and ncnn on this machine's CPU (the agent's own backends, run in this process: ``latency.agent``) and torch
on the training device. Each gives one run of a conv layer (a one-node ONNX graph, or a torch module) and of whole
models (exported the way a user exports them, ``YOLO(...).export``), batch ``latency_batch``, that the latency table
times (``latency.table``); an agent on another device (``latency.remote``) and an agent's offline table
(``latency.offline``) time for it instead.

Timing: a warm-up, then the median of repeated runs; several models are timed interleaved (one run of each per
round), so a change of machine load hits them all alike (``agent.median_ms``, ``agent.interleaved_ms``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from ultra_prune.config.keys import LATENCY_RUNTIMES  # the runtimes by name (one registry)
from ultra_prune.errors import UltraPruneError
from ultra_prune.latency.agent import Refused, backend_for, cpu_name, identity_key, interleaved_ms, median_ms  # noqa: F401
from ultra_prune.pruning.cost import ConvShape

PACKAGES = {"onnxruntime": "pip install 'ultra-prune[onnx]' (or pip install onnx onnxruntime)",
            "openvino": "pip install 'ultra-prune[openvino]'", "ncnn": "pip install ncnn; pip install --no-deps pnnx",
            "mnn": "pip install MNN",
            "litert": "onnx2tf pins its own numpy, onnx and protobuf, so give it a virtual environment of its own "
                      "(pip install onnx2tf), run `ultra-prune agent runtime=litert` there and prune with "
                      "latency_device=http://127.0.0.1:8765"}


def conv_onnx(shape: ConvShape, cin: int, cout: int) -> bytes:
    """A one-conv ONNX model: ``[batch, cin, h, w]`` -> Conv (bias: a BatchNorm folded in) -> SiLU when ``shape.act``,
    as ultralytics exports a Conv block."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    groups = cin if shape.groups == 0 else shape.groups
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin // groups, *shape.kernel)).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(cout, np.float32), "b")]
    (ph, pw), (dh, dw) = shape.padding, shape.dilation
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(shape.kernel),
                              strides=list(shape.stride), pads=[ph, pw, ph, pw], dilations=[dh, dw], group=groups)]
    out = "c"
    if shape.act:
        nodes += [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]
        out = "y"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape.batch, cin, shape.height, shape.width])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "conv", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def export_onnx(model, imgsz: int, batch: int, folder) -> Path:
    """``model`` (an ultralytics nn.Module) exported to ONNX by ultralytics' exporter, in ``folder``."""
    from ultralytics import YOLO

    from ultra_prune.io.checkpoint import save_model
    from ultra_prune.io.logs import quiet

    folder = Path(folder)
    n = len(list(folder.glob("m*.pt")))
    weights = save_model(model, folder / f"m{n}.pt")
    with quiet():
        return Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, batch=batch, verbose=False))


class Local:
    """An agent backend (``agent.BACKENDS``) run in this process, on this machine's CPU with ``threads`` threads, at
    ``precision``: one conv from ``conv_onnx``, whole models from ``export_onnx``."""

    def __init__(self, name: str, precision: str = "fp32", threads: int = 1):
        try:
            self.backend = backend_for(name, precision, threads)
        except Refused as e:
            hint = f"; {PACKAGES[name]}" if "pip install" in str(e) else ""
            raise UltraPruneError(f"prune_by=latency on {name}: {e}{hint}") from None
        self.name, self.precision, self.threads = name, precision, threads
        self.tmp = tempfile.mkdtemp(prefix="ultra_prune_latency_")

    def __del__(self):
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    def version(self) -> str:
        return self.backend.version()

    def key(self) -> str:
        """What its timings depend on: runtime, version, device, threads (and a precision other than fp32)."""
        return identity_key(self.backend.identity())

    def session(self, onnx, shape: tuple) -> Callable[[], object]:
        """One run of the ONNX model (a path, or the file's bytes) on a zero input of ``shape``."""
        if isinstance(onnx, bytes):
            path = Path(tempfile.mkdtemp(dir=self.tmp)) / "model.onnx"
            path.write_bytes(onnx)
            onnx = path
        try:
            return self.backend.session(Path(onnx), list(shape))
        except Refused as e:
            raise UltraPruneError(f"latency_runtime={self.name}: {e}") from None

    def layer(self, shape: ConvShape, cin: int, cout: int) -> Callable[[], object]:
        """One run of the conv ``shape`` at ``cin`` -> ``cout`` channels."""
        return self.session(conv_onnx(shape, cin, cout), (shape.batch, cin, shape.height, shape.width))

    def models(self, models: list, imgsz: int, batch: int) -> list[Callable[[], object]]:
        """One run of each model (ultralytics nn.Modules), exported to ONNX."""
        from ultra_prune.pruning.probe import input_channels

        folder = tempfile.mkdtemp(dir=self.tmp)
        return [self.session(export_onnx(m, imgsz, batch, folder), (batch, input_channels(m), imgsz, imgsz))
                for m in models]


class TorchRuntime:
    """torch on the training device (``device``: as ultralytics' ``device=`` takes it; default the CPU), float32,
    inference mode; the model fused as ultralytics' predictor fuses it."""

    name = "torch"

    def __init__(self, device=None):
        import torch

        from ultra_prune.io.device import as_device

        self.device = as_device(device) or torch.device("cpu")

    def version(self) -> str:
        import torch

        return torch.__version__

    def key(self) -> str:
        import torch

        if self.device.type == "cuda":  # its timings also depend on cuDNN's algorithm search
            where = f"{torch.cuda.get_device_name(self.device)} | cudnn.benchmark {torch.backends.cudnn.benchmark}"
        else:
            where = cpu_name()
        return f"torch {self.version()} {self.device.type} fp32 | {where} | threads {torch.get_num_threads()}"

    def _run(self, module, shape):
        import torch

        x = torch.zeros(shape, device=self.device)
        device = self.device
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

        def run():
            with torch.inference_mode():
                module(x)
            sync()

        return run

    def layer(self, shape: ConvShape, cin: int, cout: int):
        from torch import nn

        groups = cin if shape.groups == 0 else shape.groups
        conv = nn.Conv2d(cin, cout, shape.kernel, shape.stride, shape.padding, shape.dilation, groups)
        module = nn.Sequential(conv, nn.SiLU() if shape.act else nn.Identity()).to(self.device).eval()
        return self._run(module, (shape.batch, cin, shape.height, shape.width))

    def models(self, models: list, imgsz: int, batch: int):
        import copy

        from ultra_prune.pruning.probe import input_channels

        runs = []
        for m in models:
            m = copy.deepcopy(m).float().to(self.device).eval()
            m = m.fuse() if hasattr(m, "fuse") else m
            runs.append(self._run(m, (batch, input_channels(m), imgsz, imgsz)))
        return runs


def runtime_for(name: str, device=None, precision: str = "fp32"):
    """The runtime ``latency_runtime=name`` names, here at ``precision`` (``device``: the training device, for
    ``torch``)."""
    if name == "torch":
        if precision != "fp32":
            raise UltraPruneError(f"latency_runtime=torch times in fp32 only; drop latency_precision={precision}")
        return TorchRuntime(device)
    if name in LATENCY_RUNTIMES:
        return Local(name, precision)
    raise UltraPruneError(f"'latency_runtime={name}' is not one of {LATENCY_RUNTIMES}; use e.g. latency_runtime=onnxruntime")

"""The runtimes a model's latency is measured on (``latency_runtime=``): onnxruntime and OpenVINO on the CPU, and
torch on the training device. Each times one conv layer (a one-node ONNX graph, or a torch module) and whole
models (exported the way a user exports them, ``YOLO(...).export``), batch ``latency_batch``, in its own session.

Timing: a warm-up, then the median of repeated runs; several models are timed interleaved (one run of each per
round), so a change of machine load hits them all alike.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning.cost import ConvShape

LATENCY_RUNTIMES = ("onnxruntime", "openvino", "torch")


def median_ms(run: Callable[[], object], runs: int = 10, min_s: float = 0.02, warmup: int = 3) -> float:
    """The median time of ``run()`` in ms: ``warmup`` calls, then at least ``runs`` and ``min_s`` seconds of them."""
    for _ in range(warmup):
        run()
    times, start = [], time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def interleaved_ms(runs: list[Callable[[], object]], rounds: int = 50, warmup: int = 5, per: int = 1,
                   skip: int = 0) -> list[float]:
    """The median time in ms of each of ``runs`` over ``rounds`` rounds that call every one ``per`` times in a row
    (in an order that alternates between rounds; the first ``skip`` calls of each block not counted, so ``per > 1``
    times each model warm), after ``warmup`` calls of each."""
    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    for r in range(rounds):
        for i in range(len(runs)) if r % 2 == 0 else reversed(range(len(runs))):
            for k in range(per):
                t = time.perf_counter()
                runs[i]()
                if k >= skip:
                    times[i].append(time.perf_counter() - t)
    return [statistics.median(t) * 1e3 for t in times]


def cpu_name() -> str:
    """The CPU's model name and logical core count (what a CPU timing depends on)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} x{os.cpu_count()}"


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


class OnnxBased:
    """A runtime that runs ONNX models on the CPU with ``threads`` threads: one conv from ``conv_onnx``, whole models
    from ``export_onnx``."""

    name = ""

    def __init__(self, threads: int = 1):
        self.threads = threads
        self.tmp = tempfile.mkdtemp(prefix="ultra_prune_latency_")

    def __del__(self):
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    def key(self) -> str:
        """What its timings depend on: runtime, version, device, threads."""
        return f"{self.name} {self.version()} | {cpu_name()} | threads {self.threads}"

    def session(self, onnx, shape: tuple) -> Callable[[], object]:
        raise NotImplementedError

    def layer(self, shape: ConvShape, cin: int, cout: int) -> Callable[[], object]:
        """One run of the conv ``shape`` at ``cin`` -> ``cout`` channels."""
        return self.session(conv_onnx(shape, cin, cout), (shape.batch, cin, shape.height, shape.width))

    def models(self, models: list, imgsz: int, batch: int) -> list[Callable[[], object]]:
        """One run of each model (ultralytics nn.Modules), exported to ONNX."""
        from ultra_prune.pruning.probe import input_channels

        folder = tempfile.mkdtemp(dir=self.tmp)
        return [self.session(export_onnx(m, imgsz, batch, folder), (batch, input_channels(m), imgsz, imgsz))
                for m in models]


class OnnxRuntime(OnnxBased):
    """onnxruntime's CPU execution provider, default session options but the thread count."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UltraPruneError("prune_by=latency on onnxruntime needs the onnx and onnxruntime packages; "
                                  "pip install 'ultra-prune[onnx]' (or pip install onnx onnxruntime)") from None
        super().__init__(threads)

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def session(self, onnx, shape):
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = self.threads
        sess = ort.InferenceSession(onnx if isinstance(onnx, bytes) else str(onnx), options,
                                    providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: np.zeros(shape, np.float32)}
        return lambda: sess.run(None, feed)


class OpenVino(OnnxBased):
    """OpenVINO on the CPU, its default compile settings (as ``YOLO('m_openvino_model')`` runs it) but the thread
    count."""

    name = "openvino"

    def __init__(self, threads: int = 1):
        try:
            import onnx  # noqa: F401
            import openvino  # noqa: F401
        except ImportError:
            raise UltraPruneError("latency_runtime=openvino needs the onnx and openvino packages; "
                                  "pip install 'ultra-prune[openvino]' (or use latency_runtime=onnxruntime)") from None
        super().__init__(threads)

    def version(self) -> str:
        import openvino

        return openvino.__version__.split("-")[0]

    def session(self, onnx, shape):
        import numpy as np
        import openvino as ov

        if isinstance(onnx, bytes):
            path = Path(tempfile.mkstemp(suffix=".onnx", dir=self.tmp)[1])
            path.write_bytes(onnx)
            onnx = path
        config = {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1}
        request = ov.Core().compile_model(str(onnx), "CPU", config).create_infer_request()
        x = np.zeros(shape, np.float32)
        return lambda: request.infer({0: x})


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


def runtime_for(name: str, device=None):
    """The runtime ``latency_runtime=name`` names (``device``: the training device, for ``torch``)."""
    if name == "onnxruntime":
        return OnnxRuntime()
    if name == "openvino":
        return OpenVino()
    if name == "torch":
        return TorchRuntime(device)
    raise UltraPruneError(f"'latency_runtime={name}' is not one of {LATENCY_RUNTIMES}; use e.g. latency_runtime=onnxruntime")

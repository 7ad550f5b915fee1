"""The latency agent: times models on the device they ship to, for ``prune_by=latency latency_device=http://...``.

Run it on the device, which needs Python, numpy and its runtime only (no torch, no ultralytics; this file alone
runs too: ``python agent.py ...``)::

    ultra-prune agent runtime=onnxruntime precision=fp32 port=8765      # serve, on 127.0.0.1 by default
    ultra-prune agent runtime=ncnn host=0.0.0.0 token=SECRET             # other hosts: a token is required
    ultra-prune agent runtime=openvino precision=int8 kit=latency_kit/   # offline: time a kit, write its table

It takes ONNX models only (never code or pickles), measures each request in a child process (a runtime that crashes
on a model or overruns the time cap costs that request only), and runs them as the runtime's own users do:
onnxruntime's CPU session (int8: static QDQ quantization), OpenVINO's compiled model (int8: NNCF), ncnn (converted
by pnnx), MNN (converted by its own converter; int8: its offline quantizer), LiteRT (converted by onnx2tf). Each model
gets a warm-up, then the median of repeated runs; the models of one request are timed interleaved (one run of each per
round), so a change of load hits them alike. Every answer carries the agent's identity (runtime and version, precision,
device, threads): the trainer keys its cache on it.

HTTP: ``GET /identity``; ``POST /time`` with ``{"models": [{"onnx": <base64>, "shape": [n, c, h, w]}, ...],
"interleaved": bool, "rounds", "runs", "min_s", "warmup"}`` answers ``{"identity": ..., "ms": [...]}``; errors
answer ``{"error": ...}`` with a 4xx/5xx status, and the agent stays up. ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import io
import ipaddress
import json
import os
import platform
import secrets
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Callable

RUNTIMES = ("onnxruntime", "openvino", "ncnn", "mnn", "litert")
PRECISIONS = ("fp32", "fp16", "int8")
KIT, TABLE = "kit.json", "table.json"  # what the training machine writes into a kit, and what the agent adds


# --- timing ---------------------------------------------------------------------------------------------------------
def median_ms(run: Callable[[], object], runs: int = 10, min_s: float = 0.02, warmup: int = 3,
              deadline: float = float("inf")) -> float:
    """The median time of ``run()`` in ms: ``warmup`` calls, then at least ``runs`` and ``min_s`` seconds of them."""
    for _ in range(warmup):
        run()
    times, start = [], time.perf_counter()
    while len(times) < runs or time.perf_counter() - start < min_s:
        _check(deadline)
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def interleaved_ms(runs: list[Callable[[], object]], rounds: int = 50, warmup: int = 5, per: int = 1,
                   skip: int = 0, deadline: float = float("inf")) -> list[float]:
    """The median time in ms of each of ``runs`` over ``rounds`` rounds that call every one ``per`` times in a row
    (in an order that alternates between rounds; the first ``skip`` calls of each block not counted, so ``per > 1``
    times each model warm), after ``warmup`` calls of each."""
    for run in runs:
        for _ in range(warmup):
            run()
    times = [[] for _ in runs]
    for r in range(rounds):
        _check(deadline)
        for i in range(len(runs)) if r % 2 == 0 else reversed(range(len(runs))):
            for k in range(per):
                t = time.perf_counter()
                runs[i]()
                if k >= skip:
                    times[i].append(time.perf_counter() - t)
    return [statistics.median(t) * 1e3 for t in times]


class TooLong(Exception):
    """A request ran past the agent's ``timeout``."""


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise TooLong("the measurement ran past the agent's timeout= (raise it, or time fewer models at once)")


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


def identity_key(who: dict) -> str:
    """What timings depend on, from a runtime's identity (an agent's answer): runtime and version, device, threads,
    and the precision where it is not fp32."""
    precision = "" if who.get("precision", "fp32") == "fp32" else f" | {who['precision']}"
    return f"{who['runtime']} {who['version']} | {who['device']} | threads {who['threads']}{precision}"


# --- runtimes -------------------------------------------------------------------------------------------------------
class Refused(Exception):
    """The runtime cannot run what it was sent (a bad model, or a precision it does not have)."""


class Backend:
    """One runtime at one precision: ``session(onnx_path, shape)`` gives one run of the model on a zero input."""

    name = ""
    precisions: tuple[str, ...] = ()

    def __init__(self, precision: str, threads: int):
        if precision not in self.precisions:
            raise Refused(f"{self.name} has no precision={precision} here; use one of {self.precisions}")
        self.precision, self.threads = precision, threads

    def version(self) -> str:
        raise NotImplementedError

    def session(self, onnx: Path, shape: list[int]) -> Callable[[], object]:
        raise NotImplementedError

    def identity(self) -> dict:
        return {"runtime": self.name, "version": self.version(), "precision": self.precision,
                "device": cpu_name(), "threads": self.threads}


def _zeros(shape):
    import numpy as np

    return np.zeros(shape, np.float32)


def _calibration(shape, n: int = 4):
    """A few random inputs: int8 timings do not depend on the scales they give."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [rng.random(shape, dtype=np.float32) for _ in range(n)]


class OnnxRuntimeBackend(Backend):
    """onnxruntime's CPU execution provider with ``threads`` threads; int8: static QDQ quantization (per-channel
    int8 weights, uint8 activations), as ``onnxruntime.quantization`` makes it."""

    name, precisions = "onnxruntime", ("fp32", "int8")

    def version(self) -> str:
        import onnxruntime

        return onnxruntime.__version__

    def session(self, onnx, shape):
        import onnxruntime as ort

        if self.precision == "int8":
            onnx = self._quantized(onnx, shape)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = self.threads
        if self.threads > 1:  # a finished run's workers would spin on the cores the next model of a request needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(str(onnx), options, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: _zeros(shape)}
        return lambda: sess.run(None, feed)

    @staticmethod
    def _quantized(onnx: Path, shape) -> Path:
        import onnxruntime as ort

        try:
            from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        except ImportError:
            raise Refused("onnxruntime precision=int8 quantizes with onnxruntime.quantization, which needs onnx: "
                          "pip install onnx") from None
        name = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.feeds = iter({name: x} for x in _calibration(shape))

            def get_next(self):
                return next(self.feeds, None)

        out = onnx.with_suffix(".int8.onnx")
        quantize_static(str(onnx), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
        return out


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU, its default compile settings but the thread count and precision (fp16: the f16
    inference hint; int8: NNCF post-training quantization, as ultralytics' ``int8=True`` export makes it)."""

    name, precisions = "openvino", ("fp32", "fp16", "int8")

    def version(self) -> str:
        import openvino

        return openvino.__version__.split("-")[0]

    def session(self, onnx, shape):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(onnx))
        if self.precision == "int8":
            try:
                import nncf
            except ImportError:
                raise Refused("openvino precision=int8 quantizes with NNCF: pip install nncf") from None
            # (bias correction changes no op of the graph, only values: skipped, it costs most of the time per model)
            model = nncf.quantize(model, nncf.Dataset(_calibration(shape, 1)), subset_size=1,
                                  advanced_parameters=nncf.AdvancedQuantizationParameters(disable_bias_correction=True))
        hint = {"fp16": "f16"}.get(self.precision, "f32")
        config = {"INFERENCE_NUM_THREADS": self.threads, "NUM_STREAMS": 1, "INFERENCE_PRECISION_HINT": hint}
        request = core.compile_model(model, "CPU", config).create_infer_request()
        x = _zeros(shape)
        return lambda: request.infer({0: x})


class NcnnBackend(Backend):
    """ncnn with ``threads`` threads (fp16: ncnn's fp16 storage and arithmetic where the CPU has them), the ONNX
    model converted by pnnx (its converter binary, run as a process: no torch here)."""

    name, precisions = "ncnn", ("fp32", "fp16")

    def version(self) -> str:
        import ncnn

        return getattr(ncnn, "__version__", "?")

    @staticmethod
    def converter() -> str:
        import importlib.util

        spec = importlib.util.find_spec("pnnx")
        exe = Path(next(iter(spec.submodule_search_locations))) / "pnnx" if spec else None
        if exe is None or not exe.exists():
            raise Refused("runtime=ncnn converts ONNX with pnnx: pip install --no-deps pnnx")
        return str(exe)

    def session(self, onnx, shape):
        import ncnn

        if shape[0] != 1:
            raise Refused(f"ncnn runs batch 1 only (asked: {shape[0]}); use latency_batch=1")
        done = subprocess.run([self.converter(), str(onnx), f"inputshape=[{','.join(map(str, shape))}]"],
                              cwd=onnx.parent, capture_output=True, text=True)
        param, weights = onnx.with_suffix(".ncnn.param"), onnx.with_suffix(".ncnn.bin")
        if done.returncode or not param.exists():
            raise Refused(f"pnnx could not convert the model to ncnn: {done.stderr.strip()[-300:]}")
        net = ncnn.Net()
        net.opt.num_threads = self.threads
        fp16 = self.precision == "fp16"
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = fp16
        net.load_param(str(param))
        net.load_model(str(weights))
        data = _zeros(shape[1:])  # ncnn.Mat wraps it without a copy: it lives as long as the run
        first, outputs = net.input_names()[0], net.output_names()

        def run():
            ex = net.create_extractor()
            ex.input(first, ncnn.Mat(data))
            for name in outputs:
                ex.extract(name)

        return run


class MnnBackend(Backend):
    """MNN's CPU backend with ``threads`` threads (fp16: its low precision, fp16 arithmetic where the CPU has it; int8:
    the model quantized by MNN's offline quantizer, calibrated on a random input), the ONNX model converted by MNN's
    own converter (the wheel's ``_tools``, each run as a process: a crash there costs that model only)."""

    name, precisions = "mnn", ("fp32", "fp16", "int8")

    def version(self) -> str:
        import MNN

        return MNN.version()

    def session(self, onnx, shape):
        import MNN

        out = onnx.with_suffix(".mnn")
        # (the converter reads its options after its own name; the quantizer takes its three files alone)
        self._tool("convert", "mnnconvert", "mnnconvert", "-f", "ONNX", "--modelFile", str(onnx), "--MNNModel",
                   str(out), "--bizCode", "ultra-prune", made=out)
        if self.precision == "int8":
            out = self._quantized(out, shape)
        net = MNN.Interpreter(str(out))
        session = net.createSession({"backend": "CPU", "numThread": self.threads,
                                     "precision": "low" if self.precision == "fp16" else "normal"})
        source = net.getSessionInput(session)
        source.copyFrom(MNN.Tensor(list(shape), MNN.Halide_Type_Float, _zeros(shape), MNN.Tensor_DimensionType_Caffe))
        return lambda: net.runSession(session)

    @staticmethod
    def _tool(what: str, tool: str, *args: str, made: Path) -> None:
        """One of the wheel's tools (``_tools.<tool>``) run as a process; ``Refused`` unless it wrote ``made``."""
        done = subprocess.run([sys.executable, "-c", f"import sys, _tools; _tools.{tool}(sys.argv)", *args],
                              capture_output=True, text=True)
        if done.returncode or not made.exists():
            raise Refused(f"MNN could not {what} the model: {(done.stdout + done.stderr).strip()[-300:]}")

    def _quantized(self, model: Path, shape) -> Path:
        """``model`` quantized by ``mnnquant`` (MNN's defaults: KL feature scales, MAX_ABS weights), calibrated on one
        random input written as its sequence format: a sample folder with ``input.json`` and ``<input>.txt``."""
        import MNN
        import numpy as np

        net = MNN.Interpreter(str(model))
        name = next(iter(net.getSessionInputAll(net.createSession({"backend": "CPU"}))))
        sample = model.with_suffix(".calibration") / "0"  # (per model: in process, a folder holds several)
        sample.mkdir(parents=True)
        (sample / "input.json").write_text(json.dumps({"inputs": [{"name": name, "shape": list(shape)}]}))
        np.savetxt(sample / f"{name}.txt", _calibration(shape, 1)[0].reshape(-1), fmt="%.4f")
        config = model.with_suffix(".quantize.json")
        config.write_text(json.dumps({"path": str(sample.parent), "used_sample_num": 1, "input_type": "sequence",
                                      "feature_quantize_method": "KL", "weight_quantize_method": "MAX_ABS"}))
        out = model.with_suffix(".int8.mnn")
        self._tool("quantize", "mnnquant", str(model), str(out), str(config), made=out)
        return out


SAMPLES = "calibration_image_sample_data_20x128x128x3_float32.npy"  # what onnx2tf looks for in its working folder


class LiteRtBackend(Backend):
    """LiteRT (TensorFlow Lite) with its default CPU delegate (XNNPACK) and ``threads`` threads, the ONNX model
    converted by onnx2tf as ultralytics' TFLite export made it before 8.4 (float input and output; int8: integer
    quantization calibrated on a few random inputs, its ``_integer_quant`` model). The converter needs TensorFlow: it
    is imported once when the agent starts, so each request's child process has it."""

    name, precisions = "litert", ("fp32", "int8")

    def version(self) -> str:
        import importlib.metadata

        try:
            import onnx2tf  # noqa: F401 - here, not per request: importing TensorFlow takes seconds
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401 - the runtime, not only its metadata
        except ImportError:
            raise Refused("runtime=litert runs ai-edge-litert on models onnx2tf converts (with TensorFlow): "
                          "pip install onnx2tf, which brings both") from None
        return importlib.metadata.version("ai-edge-litert")

    def session(self, onnx, shape):
        import numpy as np
        import onnx2tf
        from ai_edge_litert.interpreter import Interpreter

        out, extra = onnx.parent / "litert", {}
        if self.precision == "int8":
            import onnx as onnx_lib

            name = onnx_lib.load(str(onnx), load_external_data=False).graph.input[0].name
            _, c, h, w = shape
            np.save(onnx.parent / "calibration.npy", np.stack(_calibration([h, w, c])))  # (NHWC, as onnx2tf reads)
            extra = dict(output_integer_quantized_tflite=True,
                         custom_input_op_name_np_data_path=[[name, str(onnx.parent / "calibration.npy"), 0.0, 1.0]])
        # onnx2tf checks a 3-channel model on sample images it downloads unless the working folder has them: some
        # random ones, there (its check only compares TensorFlow's outputs with ONNX's)
        np.save(onnx.parent / SAMPLES, np.stack(_calibration([128, 128, 3], n=20)))
        cwd, said = os.getcwd(), io.StringIO()
        os.chdir(onnx.parent)
        try:  # (ultralytics' own settings; onnx2tf ends with sys.exit on a model it cannot convert)
            with contextlib.redirect_stdout(said):
                onnx2tf.convert(input_onnx_file_path=str(onnx), output_folder_path=str(out), non_verbose=True,
                                not_use_onnxsim=True, quant_type="per-tensor", disable_group_convolution=True,
                                enable_batchmatmul_unfold=True, output_signaturedefs=True, **extra)
        except SystemExit:
            raise Refused(f"onnx2tf could not convert the model: {' '.join(said.getvalue().split())[-300:]}") from None
        finally:
            os.chdir(cwd)
        model = out / f"{onnx.stem}_{'integer_quant' if self.precision == 'int8' else 'float32'}.tflite"
        if not model.exists():
            raise Refused(f"onnx2tf wrote no {model.name}")
        interpreter = Interpreter(model_path=str(model), num_threads=self.threads)
        interpreter.allocate_tensors()
        x = interpreter.get_input_details()[0]
        interpreter.set_tensor(x["index"], np.zeros(x["shape"], x["dtype"]))  # (NHWC, as onnx2tf lays it out)
        return interpreter.invoke


BACKENDS = {b.name: b for b in (OnnxRuntimeBackend, OpenVinoBackend, NcnnBackend, MnnBackend, LiteRtBackend)}


def backend_for(runtime: str, precision: str, threads: int) -> Backend:
    """The runtime at that precision, or ``Refused`` naming what to install or choose."""
    cls = BACKENDS[runtime]
    try:
        backend = cls(precision, threads)
        backend.version()
    except ImportError as e:
        raise Refused(f"runtime={runtime} needs its package here ({e.name}): pip install {runtime}") from None
    return backend


# --- measurement ----------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """How a request times its models."""

    interleaved: bool = False
    rounds: int = 50
    runs: int = 10
    min_s: float = 0.02
    warmup: int = 3

    @classmethod
    def of(cls, request: dict) -> Plan:
        plan = cls()
        for key, kind in (("interleaved", bool), ("rounds", int), ("runs", int), ("min_s", float), ("warmup", int)):
            if key in request:
                value = request[key]
                number = isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
                if not (isinstance(value, bool) if kind is bool else number and value >= 0):
                    raise Refused(f"'{key}' must be a non-negative {kind.__name__}, got {value!r}")
                setattr(plan, key, value)
        if not 1 <= plan.rounds <= 1000 or not 1 <= plan.runs <= 1000 or plan.min_s > 10 or plan.warmup > 100:
            raise Refused("rounds and runs must be 1-1000, min_s at most 10, warmup at most 100")
        return plan


def measure(backend: Backend, models: list[tuple[bytes, list[int]]], plan: Plan, deadline: float) -> list[float]:
    """The latency in ms of each ONNX model (``(bytes, input shape)``)."""
    with tempfile.TemporaryDirectory(prefix="ultra_prune_agent_") as tmp:
        runs = []
        for i, (data, shape) in enumerate(models):
            path = Path(tmp) / f"m{i}" / "model.onnx"
            path.parent.mkdir()
            path.write_bytes(data)
            try:
                runs.append(backend.session(path, shape))
            except Refused:
                raise
            except Exception as e:  # noqa: BLE001 - whatever the runtime says of a model it cannot load
                raise Refused(f"{backend.name} refused model {i}: {' '.join(str(e).split())[:300]}") from None
            _check(deadline)
        if plan.interleaved:
            return interleaved_ms(runs, plan.rounds, plan.warmup, deadline=deadline)
        return [median_ms(r, plan.runs, plan.min_s, plan.warmup, deadline) for r in runs]


def measure_apart(backend: Backend, models: list[tuple[bytes, list[int]]], plan: Plan, limit: float) -> list[float]:
    """``measure`` in a child process (where the system forks): a runtime that crashes on a model, or runs past
    ``limit`` seconds (converting included), costs that request only; the agent stays up."""
    if not hasattr(os, "fork"):
        return measure(backend, models, plan, time.monotonic() + limit)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, answer through the pipe, leave without running the parent's clean-up
        os.close(read)
        try:
            out = {"ms": measure(backend, models, plan, time.monotonic() + limit)}
        except TooLong as e:
            out = {"too_long": str(e)}
        except BaseException as e:  # noqa: BLE001 - whatever stops a measurement (sys.exit too) is the request's answer
            out = {"refused": str(e) if isinstance(e, Refused) else f"{type(e).__name__}: {e}"}
        try:
            os.write(write, json.dumps(out).encode())
        finally:  # never back into the server's code: the child leaves here, whatever happened
            os._exit(0)
    os.close(write)
    answer, end = b"", time.monotonic() + limit + 10
    try:
        while time.monotonic() < end:
            if select.select([read], [], [], max(end - time.monotonic(), 0))[0]:
                chunk = os.read(read, 1 << 16)
                if not chunk:
                    break
                answer += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(read)
        _, status = os.waitpid(pid, 0)
    if not answer:
        if time.monotonic() >= end:
            raise TooLong("the measurement ran past the agent's timeout= (raise it, or time fewer models at once)")
        raise Refused(f"{backend.name} crashed on the model (exit status {status}); nothing was timed")
    out = json.loads(answer)
    if "too_long" in out:
        raise TooLong(out["too_long"])
    if "refused" in out:
        raise Refused(out["refused"])
    return out["ms"]


def parse_models(request: dict) -> list[tuple[bytes, list[int]]]:
    models = request.get("models")
    if not isinstance(models, list) or not models:
        raise Refused("'models' must be a non-empty list of {'onnx': <base64>, 'shape': [n, c, h, w]}")
    out = []
    for i, m in enumerate(models):
        shape = m.get("shape") if isinstance(m, dict) else None
        if not (isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and 0 < d <= 8192 for d in shape)):
            raise Refused(f"model {i}: 'shape' must be four positive ints [n, c, h, w]")
        try:
            data = base64.b64decode(m["onnx"], validate=True)
        except Exception:  # noqa: BLE001
            raise Refused(f"model {i}: 'onnx' must be the model file in base64") from None
        out.append((data, shape))
    return out


# --- serving --------------------------------------------------------------------------------------------------------
class Agent(HTTPServer):
    """One measurement at a time (a timing shares the device with nothing else the agent does)."""

    def __init__(self, address, backend: Backend, token: str | None, max_bytes: int, timeout: float):
        self.backend, self.token, self.max_bytes, self.limit = backend, token, max_bytes, timeout
        self.who = backend.identity()
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    server: Agent
    timeout = 60  # seconds a client may take to send its request

    def log_message(self, fmt, *args):  # one line per request, on stderr
        sys.stderr.write(f"agent: {self.address_string()} {fmt % args}\n")

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _allowed(self) -> bool:
        token = self.server.token
        given = self.headers.get("Authorization", "")
        if token and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._answer(401, {"error": "wrong or missing token: use http://TOKEN@host:port"})
            return False
        return True

    def do_GET(self):
        if not self._allowed():
            return
        if self.path != "/identity":
            return self._answer(404, {"error": f"no {self.path}: GET /identity or POST /time"})
        self._answer(200, self.server.who)

    def do_POST(self):
        if not self._allowed():
            return
        if self.path != "/time":
            return self._answer(404, {"error": f"no {self.path}: GET /identity or POST /time"})
        size = int(self.headers.get("Content-Length") or -1)
        if size < 0:
            return self._answer(411, {"error": "a Content-Length is required"})
        if size > self.server.max_bytes:
            left = size if size <= 4 * self.server.max_bytes else 0  # read to its end: the client gets the answer
            while left > 0:  # (not a reset); never more than it sent, or the read waits for bytes that never come
                chunk = self.rfile.read(min(1 << 16, left))
                left = left - len(chunk) if chunk else 0
            self.close_connection = True
            return self._answer(413, {"error": f"request of {size} bytes is over the agent's max_mb= "
                                               f"({self.server.max_bytes >> 20} MiB)"})
        try:
            request = json.loads(self.rfile.read(size))
            if not isinstance(request, dict):
                raise Refused("the request must be a JSON object")
            plan, models = Plan.of(request), parse_models(request)
            ms = measure_apart(self.server.backend, models, plan, self.server.limit)
        except (Refused, json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._answer(400, {"error": str(e)})
        except TooLong as e:
            return self._answer(503, {"error": str(e)})
        self._answer(200, {"identity": self.server.who, "ms": ms})


# --- offline kits ---------------------------------------------------------------------------------------------------
def time_kit(backend: Backend, folder: Path, timeout: float) -> Path:
    """Time the models a kit lists (``kit.json``: ``{"models": [{"file", "shape", "key"}], "interleaved", ...}``)
    and write ``table.json`` beside it: ``{"identity", "ms": {key: ms}}`` (a model's key defaults to its file)."""
    kit = json.loads((folder / KIT).read_text())
    files = [m["file"] for m in kit["models"]]
    keys = [m.get("key", m["file"]) for m in kit["models"]]
    for f in files:
        if Path(f).name != f:
            raise Refused(f"kit model '{f}' must be a file name inside the kit")
    models = [((folder / m["file"]).read_bytes(), m["shape"]) for m in kit["models"]]
    ms = measure(backend, models, Plan.of(kit), time.monotonic() + timeout)
    out = folder / TABLE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"identity": backend.identity(), "ms": dict(zip(keys, ms))}, indent=1))
    tmp.replace(out)
    return out


# --- command line ---------------------------------------------------------------------------------------------------
ARGS = {  # key: (default, type, help)
    "runtime": ("onnxruntime", str, f"the runtime to time on: {', '.join(RUNTIMES)}"),
    "precision": ("fp32", str, f"{', '.join(PRECISIONS)} (each runtime has some of them)"),
    "host": ("127.0.0.1", str, "the address to listen on; any but loopback requires a token"),
    "port": (8765, int, "the port to listen on"),
    "token": (None, str, "the token clients must send (http://TOKEN@host:port); made and shown once when needed"),
    "threads": (1, int, "runtime threads"),
    "max_mb": (256, int, "the largest request accepted, in MiB"),
    "timeout": (600, int, "seconds one request may take"),
    "kit": (None, str, "offline: time the kit in this folder, write its table.json and exit"),
}


class BadArgs(Exception):
    pass


def parse(argv: list[str]) -> dict:
    """``key=value`` arguments, checked against ARGS."""
    cfg = {k: d for k, (d, _, _) in ARGS.items()}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in ARGS:
            raise BadArgs(f"'{arg}' is not a key=value argument of the agent; keys: {', '.join(ARGS)}")
        kind = ARGS[key][1]
        try:
            cfg[key] = kind(value)
        except ValueError:
            raise BadArgs(f"'{key}={value}' must be an {kind.__name__}") from None
    if cfg["runtime"] not in RUNTIMES:
        raise BadArgs(f"runtime={cfg['runtime']} is not one of {', '.join(RUNTIMES)}")
    if cfg["precision"] not in PRECISIONS:
        raise BadArgs(f"precision={cfg['precision']} is not one of {', '.join(PRECISIONS)}")
    for key, low, high in (("port", 0, 65535), ("threads", 1, 1024), ("max_mb", 1, 4096), ("timeout", 1, 86400)):
        if not low <= cfg[key] <= high:
            raise BadArgs(f"{key}={cfg[key]} must be from {low} to {high}")
    return cfg


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def usage() -> str:
    rows = "\n".join(f"  {k + '=' + ('' if d is None else str(d)):<22} {h}" for k, (d, _, h) in ARGS.items())
    return f"ultra-prune agent key=value ...\n{rows}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["help"], ["-h"], ["--help"]):
        print(usage())
        return 0
    try:
        cfg = parse(argv)
        backend = backend_for(cfg["runtime"], cfg["precision"], cfg["threads"])
        if cfg["kit"]:
            print(f"agent: wrote {time_kit(backend, Path(cfg['kit']), cfg['timeout'])}")
            return 0
        token = cfg["token"]
        if not token and not loopback(cfg["host"]):
            token = secrets.token_urlsafe(18)
            print(f"agent: listening beyond loopback; token (shown once): {token}", flush=True)
        server = Agent((cfg["host"], cfg["port"]), backend, token, cfg["max_mb"] << 20, cfg["timeout"])
    except (BadArgs, Refused, OSError) as e:
        print(f"agent: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"agent: {json.dumps(server.who)} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The latency agent as a device runs it, for the tests and ``benchmarks/bench_device.py``: a virtual environment with
numpy and one runtime only (no torch), and agent processes on loopback ports."""

from __future__ import annotations

import fcntl
import importlib.metadata
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from ultra_prune.latency import agent

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(agent.__file__)
# what a device needs, per runtime (pnnx without its torch: its converter is a binary; onnx2tf brings ai-edge-litert,
# TensorFlow and a numpy of its own; onnxruntime's int8 quantizes with onnx, OpenVINO's with NNCF)
PACKAGES = {"onnxruntime": ["numpy", "onnxruntime"], "openvino": ["numpy", "openvino"], "ncnn": ["numpy", "ncnn"],
            "mnn": ["numpy", "MNN"], "litert": ["onnx2tf"]}
INT8_PACKAGES = {"onnxruntime": ["onnx"], "openvino": ["nncf"]}
NO_DEPS = {"ncnn": ["pnnx"]}


def agent_env(runtime: str, precision: str = "fp32", folder: Path = ROOT) -> str:
    """The python of a virtual environment with what an agent of ``runtime`` at ``precision`` needs and nothing else,
    each package at the version installed here where there is one. Made once, as ``folder/.venv-agent-<runtime>``
    (``-int8`` for int8), by one process at a time (CI's lanes may both ask); a stamp marks it complete."""
    venv = folder / f".venv-agent-{runtime}{'-int8' if precision == 'int8' else ''}"
    python, stamp = venv / "bin" / "python", venv / "complete"
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released when the file closes)
        if not stamp.exists():
            make_env(venv, python, runtime, precision)
            stamp.touch()
    return str(python)


def make_env(venv: Path, python: Path, runtime: str, precision: str) -> None:
    """``venv`` made anew with the packages of ``runtime`` at ``precision`` (``PACKAGES`` and the tables after it)."""
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    packages = PACKAGES[runtime] + (INT8_PACKAGES.get(runtime, []) if precision == "int8" else [])
    # (this interpreter's pip installs into it: a pip of its own would cost a few seconds per environment)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*pip, *map(pinned, packages)], check=True)
    if runtime in NO_DEPS:
        subprocess.run([*pip, "--no-deps", *NO_DEPS[runtime]], check=True)


def pinned(package: str) -> str:
    """``package==<the version installed here>``, or ``package`` where it is not installed here."""
    try:
        return f"{package}=={importlib.metadata.version(package)}"
    except importlib.metadata.PackageNotFoundError:
        return package


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """An agent process started with ``args`` (key=value): ``url``, ``said`` (what it printed up to its address),
    ``stop()``."""

    def __init__(self, python: str, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.proc = subprocess.Popen([python, str(AGENT), f"port={self.port}", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        lines = []  # up to the line with its address (a runtime may print a banner first: MNN does)
        while not lines or ("on http://" not in lines[-1] and lines[-1]):
            lines.append(self.proc.stdout.readline())
        self.said = "".join(lines)
        if "on http://" not in lines[-1]:
            self.proc.wait()
            raise RuntimeError(f"the agent exited: {self.said}")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # its log must not fill the pipe
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the agent did not start listening: {self.said}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()

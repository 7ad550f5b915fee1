"""The latency agent as a device runs it, for the tests: a virtual environment with only numpy and onnxruntime (no
torch), and agent processes on loopback ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ultra_prune.latency import agent

ROOT = Path(__file__).resolve().parents[1]
AGENT = Path(agent.__file__)


def agent_env(runtime: str = "onnxruntime", packages: list[str] | None = None) -> str:
    """The python of a virtual environment with only numpy and ``runtime`` (the versions installed here), or only
    ``packages``: what a device needs. Made once, as .venv-agent-<runtime> (pip's cache makes it quick); a stamp marks
    it complete."""
    import importlib.metadata

    venv = ROOT / f".venv-agent-{runtime}"
    python, stamp = venv / "bin" / "python", venv / "complete"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
        pins = packages or [f"{p}=={importlib.metadata.version(p)}" for p in ("numpy", runtime)]
        # (this interpreter's pip installs into it: a pip of its own would cost a few seconds per environment)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", *pins], check=True)
        stamp.touch()
    return str(python)


@pytest.fixture(scope="session")
def agent_python() -> str:
    return agent_env("onnxruntime")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """An agent process: ``url``, ``stop()``."""

    def __init__(self, python: str, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.proc = subprocess.Popen([python, str(AGENT), f"port={self.port}", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.first = self.proc.stdout.readline()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # its log must not fill the pipe
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the agent exited: {self.first}{self.proc.stdout.read()}")
                time.sleep(0.1)
        raise RuntimeError("the agent did not start listening")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def running(agent_python):
    started = []

    def start(*args):
        started.append(Running(agent_python, *args))
        return started[-1]

    yield start
    for a in started:
        a.stop()

"""Latency measured on the device a model ships to: ``latency_device=http://[TOKEN@]host:port`` (a running agent)
or ``latency_table=<table.json>`` (the table an agent wrote offline from a kit, ``latency/kit.py``).

``Remote`` sends the ONNX models the pruner would time locally to the agent (``latency/agent.py``) and reads back
its timings; its key is the agent's identity (runtime, version, precision, device, threads), remembered per address
in the latency cache, so a pruning whose timings are all cached works with the agent stopped. Every failure is one
``UltraPruneError`` line naming the address and the fix.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

from ultra_prune.errors import UltraPruneError
from ultra_prune.latency.agent import identity_key

CHUNK = 24  # conv layers per request: a killed agent loses at most this many timings
AGENTS = "agents"  # the latency cache's section of remembered agent identities, by address


class Agent:
    """The agent at ``url`` (``http://[TOKEN@]host:port``)."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise UltraPruneError(f"latency_device={self._shown(url)} is not an agent's address; give "
                                  "latency_device=http://host:port (http://TOKEN@host:port with a token)")
        self.token = urllib.parse.unquote(parts.username) if parts.username else None
        self.address = f"http://{parts.hostname}:{parts.port}"

    @staticmethod
    def _shown(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        return url.replace(f"{parts.username}@", "***@") if parts.username else url

    def call(self, path: str, body: dict | None = None, timeout: float = 3600) -> dict:
        """The agent's JSON answer to ``GET path`` (or ``POST`` with ``body``); failures as one clear error."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.address + path, data=data,
                                         headers={"Content-Type": "application/json"})
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as e:
            raise self._refusal(e) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise UltraPruneError(
                f"latency_device: no agent answered at {self.address} ({reason}); start it on the device "
                "(ultra-prune agent runtime=... host=... port=...) or fix the address. Timings taken before are "
                "cached: run again once it answers") from None

    def _refusal(self, e: urllib.error.HTTPError) -> UltraPruneError:
        try:
            said = json.loads(e.read()).get("error", "")
        except (ValueError, AttributeError):
            said = e.reason
        if e.code == 401:
            return UltraPruneError(f"latency_device: the agent at {self.address} refused the token ({said}); give "
                                   "the token it printed at start as latency_device=http://TOKEN@host:port")
        return UltraPruneError(f"latency_device: the agent at {self.address} could not time the model: {said}")

    def time(self, models: list[tuple[bytes, tuple]], interleaved: bool, rounds: int = 50) -> list[float]:
        """The agent's median ms of each ONNX model ``(bytes, input shape)``."""
        body = {"models": [{"onnx": base64.b64encode(b).decode(), "shape": list(s)} for b, s in models],
                "interleaved": interleaved, "rounds": rounds}
        ms = self.call("/time", body)["ms"]
        if len(ms) != len(models):
            raise UltraPruneError(f"latency_device: the agent at {self.address} answered {len(ms)} timings for "
                                  f"{len(models)} models; update it to this version of ultra-prune")
        return ms


class Remote:
    """The runtime of the agent at ``url``: the latency table sends it the ONNX models it would time here (one conv
    per width, ``chunk`` a request, and whole models) and files its timings under the agent's identity, which is
    remembered per address in the latency ``cache``: a pruning whose timings are all cached needs no agent."""

    chunk = CHUNK

    def __init__(self, url: str, cache):
        self.agent, self.cache = Agent(url), cache
        self.name = f"the agent at {self.agent.address}"
        self.origin = f" (agent at {self.agent.address})"
        self._who = None

    def identity(self) -> dict:
        """The agent's identity: asked, and remembered; the remembered one when the agent does not answer."""
        if self._who is None:
            try:
                self._who = self.agent.call("/identity", timeout=10)
            except UltraPruneError:
                self._who = self.cache.get(AGENTS, self.agent.address)
                if self._who is None:
                    raise
            else:
                self.cache.put(AGENTS, self.agent.address, self._who)
                self.cache.save()
        return self._who

    def key(self) -> str:
        return identity_key(self.identity())

    def time_onnx(self, files: list[tuple[bytes, tuple]], interleaved: bool, rounds: int = 50) -> list[float]:
        """The agent's median ms of each ONNX model ``(bytes, input shape)``."""
        return self.agent.time(files, interleaved, rounds)

"""Latency measured on the device: the pruner gets every timing from an agent in its own process and environment
(``latency_device=``) or from the table an agent wrote offline (``latency_table=``); every failure is one line that
names the agent's address and the fix, and what was timed before it stays cached."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from agents import AGENT, Running, free_port
from helpers import base

from ultra_prune.commands.prune import prune
from ultra_prune.errors import UltraPruneError
from ultra_prune.latency import remote, runtimes
from ultra_prune.latency.agent import identity_key as agent_identity_key
from ultra_prune.latency import table as latency

IMGSZ = 64
SETTINGS = dict(prune_by="latency", imgsz=IMGSZ, prune_round=16, verbose=False, report_files=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A latency cache of this test's own; local timing refused (every timing must come from the agent)."""
    path = tmp_path / "latency.json"
    monkeypatch.setattr(latency, "cache_path", lambda: path)

    def refused(*args, **kwargs):
        raise AssertionError("timed on this machine")

    monkeypatch.setattr(runtimes, "Local", refused)
    return path


def entries(path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.timed  # (long as well: every conv of yolov8n timed on an agent, about 40 s)
def test_the_pruner_gets_every_timing_from_the_agent_and_again_needs_none(running, cache):
    a = running()
    model = base("yolov8n.yaml")
    pruned, report = prune(model, 0.5, latency_device=a.url, **SETTINGS)
    who = remote.Remote(a.url, latency.Cache()).identity()
    key = agent_identity_key(who)
    assert pruned is not None and key in report.latency_runtime and a.url in report.latency_runtime
    after, before = report.latency_measured[1], report.latency_measured[0]
    assert after <= 1.05 * 0.5 * before  # the budget, measured on the agent
    timed = entries(cache)[key]
    assert sum(k.startswith("[") for k in timed) > 100  # the per-conv table, keyed by the agent's identity
    a.stop()  # the same pruning again: all cached, the agent is not needed
    again, second = prune(model, 0.5, latency_device=a.url, **SETTINGS)
    assert [p.shape for p in again.parameters()] == [p.shape for p in pruned.parameters()]
    assert second.latency_measured == report.latency_measured


def test_an_agent_that_is_down_is_one_clear_error(cache):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UltraPruneError, match=rf"no agent answered at {url} .*ultra-prune agent"):
        prune(base("yolov8n.yaml"), 0.5, latency_device=url, **SETTINGS)


def test_a_wrong_token_is_one_clear_error(running, cache):
    a = running("token=s3cret")
    wrong = a.url.replace("http://", "http://guess@")
    with pytest.raises(UltraPruneError, match=rf"agent at {a.url} refused the token"):
        prune(base("yolov8n.yaml"), 0.5, latency_device=wrong, **SETTINGS)
    right = a.url.replace("http://", "http://s3cret@")
    assert remote.Remote(right, latency.Cache()).identity()["runtime"] == "onnxruntime"


def test_a_model_the_runtime_refuses_is_one_clear_error(running, cache, monkeypatch):
    a = running()
    monkeypatch.setattr(runtimes, "conv_onnx", lambda *args: b"\x08\x07 not an onnx model")
    with pytest.raises(UltraPruneError, match=rf"agent at {a.url} could not time the model: onnxruntime refused"):
        prune(base("yolov8n.yaml"), 0.5, latency_device=a.url, **SETTINGS)


@pytest.mark.long  # (about 30 s)
def test_an_agent_killed_mid_measurement_keeps_what_it_timed(agent_python, cache, monkeypatch):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    a = Running(agent_python, port=port)
    time_on_agent, calls = remote.Agent.time, []

    def killed_after_the_first(self, models, interleaved, rounds=50):
        if calls:
            a.stop()
        calls.append((len(models), interleaved))
        return time_on_agent(self, models, interleaved, rounds)

    monkeypatch.setattr(remote.Agent, "time", killed_after_the_first)
    with pytest.raises(UltraPruneError, match=rf"no agent answered at {url}.*cached"):
        prune(base("yolov8n.yaml"), 0.5, latency_device=url, **SETTINGS)
    key = agent_identity_key(json.loads(cache.read_text())[remote.AGENTS][url])
    assert sum(k.startswith("[") for k in entries(cache)[key]) == remote.CHUNK  # the first request's timings
    calls.clear()
    b = Running(agent_python, port=port)  # back up: the run goes on from there
    try:
        pruned, _ = prune(base("yolov8n.yaml"), 0.5, latency_device=url, **SETTINGS)
    finally:
        b.stop()
    layers = sum(k.startswith("[") for k in entries(cache)[key])
    assert pruned is not None and sum(n for n, whole in calls if not whole) == layers - remote.CHUNK


def test_timings_reach_the_disk_while_a_table_is_timed(agent_python, cache, monkeypatch):
    """A trainer killed outright (no exception to save on) loses at most ``SAVE_EVERY_S`` of timings: with it at 0,
    the first request's timings are on disk before the second request goes out."""
    monkeypatch.setattr(latency, "SAVE_EVERY_S", 0.0)
    a = Running(agent_python)
    time_on_agent, on_disk = remote.Agent.time, []

    class Seen(Exception):
        """Two requests' timings seen on disk: the rest of the table need not be timed."""

    def looking_at_the_disk(self, models, interleaved, rounds=50):
        if not interleaved and cache.exists():
            on_disk.append(sum(k.startswith("[") for ks in json.loads(cache.read_text()).values() for k in ks))
            if len([n for n in on_disk if n]) == 2:
                raise Seen
        return time_on_agent(self, models, interleaved, rounds)

    monkeypatch.setattr(remote.Agent, "time", looking_at_the_disk)
    try:
        with pytest.raises(Seen):
            prune(base("yolov8n.yaml"), 0.5, latency_device=a.url, **SETTINGS)
    finally:
        a.stop()
    assert [n for n in on_disk if n] == [remote.CHUNK, 2 * remote.CHUNK]  # each request saved before the next


def test_the_cli_exits_2_and_writes_nothing_when_the_agent_is_down(tmp_path, one_shot):
    weights = one_shot / "weights" / "pruned.pt"
    model = tmp_path / "m.pt"
    model.write_bytes(weights.read_bytes())
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run([sys.executable, "-m", "ultra_prune.commands.cli", "prune", f"model={model}", "prune=0.3",
                           "prune_by=latency", f"latency_device={url}", "imgsz=64"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and f"no agent answered at {url}" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_a_device_out_of_reach_times_a_kit_offline(agent_python, tmp_path, cache):
    from ultra_prune.commands.kit import write_kit

    model = base("yolov8n.yaml")
    kit = write_kit(model, IMGSZ, 16, 1, tmp_path / "kit")
    done = subprocess.run([agent_python, str(AGENT), f"kit={kit.parent}"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    table = kit.parent / "table.json"
    pruned, report = prune(model, 0.5, latency_table=str(table), **{**SETTINGS, "prune_round": None})
    assert pruned is not None and report.prune_round == 16  # the kit's rounding
    assert report.latency_measured is None and "predicted only" in report.text()
    assert report.latency_predicted[1] <= 0.5 * report.latency_predicted[0] + 1e-9
    with pytest.raises(UltraPruneError, match="has no timing of"):
        prune(model, 0.5, latency_table=str(table), **{**SETTINGS, "imgsz": 96, "prune_round": None})

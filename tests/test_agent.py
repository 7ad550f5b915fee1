"""The latency agent as a device runs it: a separate process in its own virtual environment (numpy and onnxruntime,
no torch), over loopback. Bad input never takes it down; a token keeps strangers out."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from agents import AGENT, Running, agent_env

from ultra_prune.latency import agent


def request(url: str, path: str, body: bytes | None = None, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=body)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def conv_request(n: int = 1, **plan) -> bytes:
    from ultra_prune.latency.runtimes import conv_onnx
    from ultra_prune.pruning.cost import ConvShape

    shape = ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 16, 1, True)
    onnx = base64.b64encode(conv_onnx(shape, 8, 16)).decode()
    return json.dumps({"models": [{"onnx": onnx, "shape": [1, 8, 16, 16]}] * n, **plan}).encode()


def test_the_agent_needs_no_torch(agent_python):
    found = subprocess.run([agent_python, "-c", "import torch"], capture_output=True)
    assert found.returncode != 0  # the device's environment has no torch to import


def test_it_answers_with_its_identity_and_timings(running):
    a = running("threads=1")
    status, who = request(a.url, "/identity")
    assert status == 200 and who["runtime"] == "onnxruntime" and who["precision"] == "fp32" and who["threads"] == 1
    assert "127.0.0.1" in a.said  # loopback by default
    status, answer = request(a.url, "/time", conv_request(2, interleaved=True, rounds=5))
    assert status == 200 and answer["identity"] == who and len(answer["ms"]) == 2
    assert all(0 < ms < 1000 for ms in answer["ms"])


@pytest.mark.parametrize("body, code, says", [
    (b"{not json", 400, "Expecting"),
    (json.dumps({"models": [{"onnx": base64.b64encode(b"not onnx").decode(), "shape": [1, 3, 8, 8]}]}).encode(),
     400, "refused model 0"),
    (json.dumps({"models": [{"onnx": "!!", "shape": [1, 3, 8, 8]}]}).encode(), 400, "base64"),
    (json.dumps({"models": [{"onnx": "", "shape": [1, 3]}]}).encode(), 400, "four positive ints"),
    (json.dumps({"models": [], "rounds": 5}).encode(), 400, "non-empty list"),
    (json.dumps({"models": [{"onnx": "", "shape": [1, 3, 8, 8]}], "rounds": -1}).encode(), 400, "non-negative"),
    (json.dumps(["pickle me"]).encode(), 400, "JSON object"),
])
def test_a_bad_request_gets_an_error_and_the_agent_stays_up(running, body, code, says):
    a = running()
    status, answer = request(a.url, "/time", body)
    assert status == code and says in answer["error"]
    assert request(a.url, "/identity")[0] == 200


def test_size_and_time_caps(running):
    a = running("max_mb=1", "timeout=1")
    for size in (2 << 20, (2 << 20) + 1000):  # (not a multiple of the agent's read size: it reads no more than sent)
        status, answer = request(a.url, "/time", b"x" * size)
        assert status == 413 and "max_mb" in answer["error"]
    status, answer = request(a.url, "/time", conv_request(1, runs=1000, min_s=10))
    assert status == 503 and "timeout" in answer["error"]
    assert request(a.url, "/identity")[0] == 200


def test_a_token_keeps_strangers_out(running):
    a = running("token=s3cret")
    assert request(a.url, "/identity")[0] == 401
    assert request(a.url, "/identity", token="wrong")[0] == 401
    assert request(a.url, "/identity", token="s3cret")[0] == 200


def test_only_loopback_goes_without_a_token():
    assert agent.loopback("127.0.0.1") and agent.loopback("::1") and agent.loopback("localhost")
    assert not agent.loopback("0.0.0.0") and not agent.loopback("192.0.2.1")


@pytest.mark.parametrize("args, says", [
    (["runtime=tensorflow"], "runtime=tensorflow is not one of"),
    (["precision=fp8"], "precision=fp8 is not one of"),
    (["port=99999"], "port=99999 must be from"),
    (["threads=x"], "'threads=x' must be an int"),
    (["prot=1"], "'prot=1' is not a key=value argument"),
    (["precision=fp16"], "onnxruntime has no precision=fp16"),
])
def test_bad_arguments_exit_2_with_one_line(agent_python, args, says):
    done = subprocess.run([agent_python, str(AGENT), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and says in done.stderr


def test_an_offline_kit_gets_its_table(agent_python, tmp_path):
    from ultra_prune.latency.runtimes import conv_onnx
    from ultra_prune.pruning.cost import ConvShape

    shape = ConvShape((1, 1), (1, 1), (0, 0), (1, 1), 1, 8, 8, 1, False)
    (tmp_path / "a.onnx").write_bytes(conv_onnx(shape, 8, 8))
    kit = {"models": [{"file": "a.onnx", "shape": [1, 8, 8, 8], "key": "conv a"}], "runs": 3}
    (tmp_path / "kit.json").write_text(json.dumps(kit))
    done = subprocess.run([agent_python, str(AGENT), f"kit={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["identity"]["runtime"] == "onnxruntime" and list(table["ms"]) == ["conv a"]


def test_an_openvino_agent_in_its_own_environment(tmp_path):
    python = agent_env("openvino")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    a = Running(python, "runtime=openvino")
    try:
        status, who = request(a.url, "/identity")
        assert status == 200 and who["runtime"] == "openvino"
        status, answer = request(a.url, "/time", conv_request(1, runs=3))
        assert status == 200 and answer["ms"][0] > 0
    finally:
        a.stop()


def test_a_runtime_that_crashes_costs_the_request_only():
    import os
    import signal

    class Crashing(agent.Backend):
        name, precisions = "crashing", ("fp32",)

        def version(self):
            return "0"

        def session(self, onnx, shape):
            os.kill(os.getpid(), signal.SIGKILL)  # the runtime dies on the model (as by a native crash)

    with pytest.raises(agent.Refused, match="crashing crashed on the model"):
        agent.measure_apart(Crashing("fp32", 1), [(b"onnx", [1, 3, 8, 8])], agent.Plan(), 30)


def test_a_runtime_that_exits_costs_the_request_only():
    """A converter that ends with sys.exit (onnx2tf does, on a model it cannot convert): the request is refused, and
    the child that measured it never runs on in the caller's code."""

    class Exiting(agent.Backend):
        name, precisions = "exiting", ("fp32",)

        def version(self):
            return "0"

        def session(self, onnx, shape):
            sys.exit(1)

    with pytest.raises(agent.Refused, match="SystemExit"):
        agent.measure_apart(Exiting("fp32", 1), [(b"onnx", [1, 3, 8, 8])], agent.Plan(), 30)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_mnn_agent_in_its_own_environment(precision):
    """An MNN agent (numpy and the MNN wheel only: it converts ONNX with its own converter, and quantizes with its own
    quantizer) answers with its identity and times the models of a request."""
    python = agent_env("mnn")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    a = Running(python, "runtime=mnn", f"precision={precision}")
    try:
        status, who = request(a.url, "/identity")
        assert status == 200 and who["runtime"] == "mnn" and who["precision"] == precision
        status, answer = request(a.url, "/time", conv_request(2, runs=5))
        assert status == 200 and len(answer["ms"]) == 2 and all(ms > 0 for ms in answer["ms"])
    finally:
        a.stop()


@pytest.mark.parametrize("runtime", ["onnxruntime", "mnn"])
def test_int8_times_the_model_the_runtimes_quantizer_made(tmp_path, runtime):
    """precision=int8 runs what the runtime's own quantizer made of the ONNX model: onnxruntime's static QDQ graph,
    MNN's offline-quantized model (int8 weights)."""
    from ultra_prune.latency.runtimes import conv_onnx
    from ultra_prune.pruning.cost import ConvShape

    pytest.importorskip({"onnxruntime": "onnxruntime", "mnn": "MNN"}[runtime])
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(conv_onnx(ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 16, 1, True), 64, 128))
    run = agent.backend_for(runtime, "int8", 1).session(onnx_path, [1, 64, 16, 16])
    run()
    if runtime == "onnxruntime":
        import onnx

        ops = {n.op_type for n in onnx.load(str(tmp_path / "model.int8.onnx")).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    else:  # a byte per weight where the converted model has four (64 * 128 * 9 of them)
        assert (tmp_path / "model.int8.mnn").stat().st_size < 0.4 * (tmp_path / "model.mnn").stat().st_size


def test_mnn_int8_quantizes_each_of_the_models_of_one_folder(tmp_path):
    """In process the trainer exports whole models side by side into one folder: each gets its own calibration."""
    from ultra_prune.latency.runtimes import conv_onnx
    from ultra_prune.pruning.cost import ConvShape

    pytest.importorskip("MNN")
    backend = agent.backend_for("mnn", "int8", 1)
    for i, cout in enumerate((32, 64)):
        path = tmp_path / f"m{i}.onnx"
        path.write_bytes(conv_onnx(ConvShape((3, 3), (1, 1), (1, 1), (1, 1), 1, 16, 16, 1, True), 16, cout))
        backend.session(path, [1, 16, 16, 16])()
    assert (tmp_path / "m0.int8.mnn").exists() and (tmp_path / "m1.int8.mnn").exists()


@pytest.mark.long  # (its environment downloads TensorFlow, which onnx2tf converts with; a conversion takes a second)
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_litert_agent_in_its_own_environment(precision):
    """A LiteRT agent (onnx2tf, which brings ai-edge-litert and TensorFlow; no torch) converts the ONNX models of a
    request as ultralytics' onnx2tf export did, and times them on LiteRT."""
    python = agent_env("litert")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    a = Running(python, "runtime=litert", f"precision={precision}")
    try:
        status, who = request(a.url, "/identity")
        assert status == 200 and who["runtime"] == "litert" and who["precision"] == precision
        status, answer = request(a.url, "/time", conv_request(2, runs=5))
        assert status == 200 and len(answer["ms"]) == 2 and all(ms > 0 for ms in answer["ms"])
        junk = {"models": [{"onnx": base64.b64encode(b"not a model").decode(), "shape": [1, 8, 16, 16]}]}
        status, answer = request(a.url, "/time", json.dumps(junk).encode())
        assert status == 400 and re.search("litert|onnx2tf", answer["error"])  # refused, and it stays up
        assert request(a.url, "/identity")[0] == 200
    finally:
        a.stop()

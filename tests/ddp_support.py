"""Test support for tests/test_ddp.py and tests/test_crash.py: training in a subprocess, ultralytics' own DDP path
on CPU processes (gloo), and a log of what each rank does.

Nothing here is imported by the plugin. It acts only in the subprocesses a test starts:

- ``python ddp_support.py SPEC.json`` is the "user's script": ``YOLO(model).train(**kwargs)`` (or ``.prune``), with
  this module installed first.
- ``support_env(folder, world=2)`` is the environment for it: a generated ``sitecustomize.py`` on ``PYTHONPATH``
  installs this module in every DDP worker (fresh interpreters started by ``torch.distributed.run`` on the temp file
  that ultralytics generates) and nowhere else (the launcher has no ``LOCAL_RANK``).

CPU DDP (``ULTRA_PRUNE_TEST_CPU_DDP=<world size>``): ultralytics 8.4.190 assumes CUDA devices for DDP in four
places, and only those are changed; three by rewriting the one statement in ultralytics' own source (so the rest of
each method, and every other method, stays stock), one (all device set-up) by a CPU version of the method:

1. ``BaseTrainer.__init__``: a CPU device gives ``world_size = 0`` (no DDP); here it gives the world size.
2. ``BaseTrainer._setup_ddp``: ``torch.device('cuda', LOCAL_RANK)`` + ``set_device`` + NCCL becomes the CPU device and
   gloo (``init_process_group`` otherwise as stock, with a shorter timeout so that a test cannot hang for 3 hours).
3. ``BaseTrainer._setup_train``: ``DistributedDataParallel(device_ids=[device.index])`` becomes ``device_ids=None``,
   which is what torch requires for a CPU module.
4. ``BaseValidator.__call__`` (the final validation of best.pt on every rank): a DDP rank's device is
   ``torch.device('cuda', current_device())``; here the CPU when ``device=cpu``.

Everything else is the path users get on GPUs: ``Model.train`` -> ``generate_ddp_command`` (the temp file, the
cloudpickled trainer state) -> ``subprocess.run(torch.distributed.run ...)`` -> the DDP wrapper's gradient
all-reduce, the DistributedSampler, rank-0 saving.

Log (``ULTRA_PRUNE_TEST_LOG=<file>``): every process appends JSON lines (one ``write`` each, so lines of two ranks
never interleave): ``choose`` at every (re)choice of ``sparsity_target``'s channels (rank, epoch, batches started,
sha1 of the chosen indices), ``train_start`` at ``on_train_start`` (architecture and weight digests of the model
being trained, world size), ``epoch_end`` at every ``on_train_epoch_end`` (digests of the BatchNorm gamma and beta),
and ``hang`` / ``die`` where a test's callback stops a run.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

WORLD = "ULTRA_PRUNE_TEST_CPU_DDP"
LOG = "ULTRA_PRUNE_TEST_LOG"
HERE = Path(__file__).resolve().parent

FAULT = "ULTRA_PRUNE_TEST_FAULT"
MARKER_FILE = "ULTRA_PRUNE_TEST_MARKER"
SITECUSTOMIZE = """\
import os
if os.environ.get({world!r}) and "LOCAL_RANK" in os.environ:  # a DDP worker of a test run, not the launcher
    import sys
    sys.path.insert(0, {here!r})
    import ddp_support
    ddp_support.install()
if os.environ.get({fault!r}):  # a process that must fail while writing a checkpoint
    import sys
    sys.path.insert(0, {here!r})
    import ddp_support
    ddp_support.install_fault(os.environ[{fault!r}])
"""


# --- what a process logs --------------------------------------------------------------------------------------------
def rank() -> int:
    return int(os.environ.get("RANK", "-1"))


def log(event: str, **fields) -> None:
    path = os.environ.get(LOG)
    if path:
        line = json.dumps({"event": event, "rank": rank(), "pid": os.getpid(), "t": time.time(), **fields}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def read_log(path) -> list[dict]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def digest_chosen(chosen: dict) -> str:
    h = hashlib.sha1()
    for name in sorted(chosen):
        h.update(name.encode())
        h.update(chosen[name].cpu().long().sort().values.numpy().tobytes())
    return h.hexdigest()


def model_digests(model) -> dict:
    """sha1 of the state dict's names and shapes (the architecture) and of its float values (the weights)."""
    import torch

    arch, weights = hashlib.sha1(), hashlib.sha1()
    for k, v in model.state_dict().items():
        arch.update(f"{k}:{tuple(v.shape)};".encode())
        if v.is_floating_point():
            weights.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    widths = [m.num_features for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return {"arch": arch.hexdigest(), "weights": weights.hexdigest(), "bn_widths": widths}


def bn_digests(model) -> dict:
    """sha1 of every BatchNorm gamma and of every beta (exact values), and the mean |gamma|."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    g = torch.cat([m.weight.detach().float().cpu().flatten() for m in bns])
    b = torch.cat([m.bias.detach().float().cpu().flatten() for m in bns])
    return {"gamma": hashlib.sha1(g.numpy().tobytes()).hexdigest(), "beta": hashlib.sha1(b.numpy().tobytes()).hexdigest(),
            "gamma_mean": g.abs().mean().item()}


def _unwrap(model):
    return getattr(model, "_orig_mod", getattr(model, "module", model))


# --- the patches ------------------------------------------------------------------------------------------------------
def _rewrite(cls, name: str, edits: list[tuple[str, str]]) -> None:
    """Replace ``cls.name`` by its own source with each ``old`` statement replaced by ``new`` (each must occur once),
    compiled in its module's globals with its own file name and line numbers."""
    fn = getattr(cls, name)
    lines, first = inspect.getsourcelines(fn)
    src = "".join(lines)
    for old, new in edits:
        if src.count(old) != 1:
            raise RuntimeError(f"ultralytics' {cls.__name__}.{name} changed: {old!r} not found once; update ddp_support")
        src = src.replace(old, new)
    src = textwrap.dedent(src)
    namespace = {}
    exec(compile("\n" * (first - 1) + src, inspect.getsourcefile(fn), "exec"), sys.modules[fn.__module__].__dict__,
         namespace)
    setattr(cls, name, namespace[name])


CPU_WORLD_OLD = """if self.device.type in {"cpu", "mps"}:
            world_size = 0"""
CPU_WORLD_NEW = """if self.device.type in {"cpu", "mps"}:
            world_size = int(__import__("os").environ.get("ULTRA_PRUNE_TEST_CPU_DDP", 0))  # test: CPU DDP"""
VAL_DEVICE_OLD = "else torch.device(device_type, get_torch_device_backend(device_type).current_device()),"
VAL_DEVICE_NEW = ("else torch.device('cpu') if str(self.args.device) == 'cpu'  # test: CPU DDP\n"
                  "                else torch.device(device_type, get_torch_device_backend(device_type).current_device()),")
DEVICE_IDS_OLD = "device_ids=[self.device.index],"
DEVICE_IDS_NEW = "device_ids=None if self.device.type == 'cpu' else [self.device.index],  # test: CPU DDP"


def _setup_ddp_cpu(self):
    """The stock ``_setup_ddp`` for CPU processes: CPU device, gloo (the stock code picks gloo too when NCCL is not
    available, as in a CPU build of torch)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist
    from ultralytics.utils import RANK

    self.device = torch.device("cpu")
    self.accelerator = None
    dist.init_process_group(backend="gloo", timeout=timedelta(seconds=180), rank=RANK, world_size=self.world_size)


def patch_cpu_ddp() -> None:
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.engine.validator import BaseValidator

    if getattr(BaseTrainer, "_test_cpu_ddp", False):
        return
    _rewrite(BaseTrainer, "__init__", [(CPU_WORLD_OLD, CPU_WORLD_NEW)])
    _rewrite(BaseTrainer, "_setup_train", [(DEVICE_IDS_OLD, DEVICE_IDS_NEW)])
    _rewrite(BaseValidator, "__call__", [(VAL_DEVICE_OLD, VAL_DEVICE_NEW)])
    BaseTrainer._setup_ddp = _setup_ddp_cpu
    BaseTrainer._test_cpu_ddp = True


def check_cpu_ddp_patchable() -> str | None:
    """None if this ultralytics has the statements patch_cpu_ddp rewrites, else why not."""
    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.engine.validator import BaseValidator

    for cls, name, old in ((BaseTrainer, "__init__", CPU_WORLD_OLD), (BaseTrainer, "_setup_train", DEVICE_IDS_OLD),
                           (BaseValidator, "__call__", VAL_DEVICE_OLD)):
        if inspect.getsource(getattr(cls, name)).count(old) != 1:
            return f"{cls.__name__}.{name} has no {old!r}"
    return None


def plugin_batch_count(trainer):
    """The plugin's own count of the epoch's batches started (its schedule's progress runs on it), where it keeps
    one: ``trainer.batch_i`` or a part's ``batches``; else None."""
    if hasattr(trainer, "batch_i"):
        return trainer.batch_i
    for part in getattr(trainer, "parts", None) or []:
        if isinstance(getattr(part, "batches", None), int):
            return part.batches
    return None


_state = {"trainer": None, "target": None}  # this process's trainer and SparsityTarget, once seen


def patch_logging() -> None:
    """Log events from ultralytics' ``BaseTrainer.run_callbacks`` (every event of every trainer) and from
    ``SparsityTarget.choose`` (every (re)choice of the target's channels, with the trainer's epoch and counts)."""
    from ultralytics.engine.trainer import BaseTrainer

    from ultra_prune.slimming.target import SparsityTarget

    if getattr(BaseTrainer, "_test_logged", False):
        return
    choose, run_callbacks, train = SparsityTarget.choose, BaseTrainer.run_callbacks, BaseTrainer.train

    def logged_choose(self, model, *args, **kwargs):
        out = choose(self, model, *args, **kwargs)
        _state["target"] = self
        t = _state["trainer"]
        started = getattr(t, "_test_started", None)  # batches of this epoch started, by our own count callbacks
        log("choose", epoch=getattr(t, "epoch", None), started=started, epoch_start=started == 0,
            batch_i=plugin_batch_count(t), digest=digest_chosen(self.chosen), count=self.chosen_count())
        return out

    def logged_run_callbacks(self, event):
        _state["trainer"] = self
        if event == "on_train_epoch_end":  # every rank: are the ranks' weights still the same?
            log("epoch_end", epoch=self.epoch, **bn_digests(_unwrap(self.model)))
        if event == "on_train_start":
            log("train_start", epoch=self.start_epoch, world_size=getattr(self, "world_size", None),  # 8.2: no attr
                device=str(self.device),
                ddp=type(self.model).__name__, **model_digests(_unwrap(self.model)))
        run_callbacks(self, event)

    def logged_train(self):
        # the launching process (rank -1) and each worker: each event's callbacks, by their code (a callback
        # cloudpickled into a DDP worker is a new object, with '<dynamic-code>' for its file name, so neither
        # identity nor the file can tell copies apart; name, line and bytecode can)
        def where(fn):
            code = getattr(fn, "__code__", None)
            if code is None:
                return repr(fn)
            return f"{code.co_name}@{code.co_firstlineno}#{hashlib.sha1(code.co_code).hexdigest()[:10]}"

        log("callbacks", where={e: [where(fn) for fn in fns] for e, fns in self.callbacks.items() if fns})
        return train(self)

    SparsityTarget.choose = logged_choose
    BaseTrainer.run_callbacks = logged_run_callbacks
    BaseTrainer.train = logged_train
    BaseTrainer._test_logged = True


def install() -> None:
    """Apply the CPU-DDP patches (when asked for) and the logging ones, in this process."""
    import ultra_prune

    ultra_prune.apply()  # the plugin's own patches first (idempotent; the start-up hook may have applied them)

    if int(os.environ.get(WORLD) or 0) > 1:
        patch_cpu_ddp()
    patch_logging()


# --- faults while writing (test_crash.py) ------------------------------------------------------------------------
def _is_temp(f) -> bool:
    """A temporary file of ``ultra_prune.io.checkpoint.atomic_write`` (``.<name>.<random>.tmp``)."""
    name = Path(str(f)).name if isinstance(f, (str, os.PathLike)) else ""
    return name.startswith(".") and name.endswith(".tmp")


def _half_then(f, data: bytes, fault: str) -> None:
    """Write the first half of ``data`` to ``f``; then hang (to be SIGKILLed: marker file first) or raise ENOSPC."""
    import errno

    with open(f, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        os.fsync(fh.fileno())
    if fault.startswith("hang"):
        Path(os.environ[MARKER_FILE]).write_text(str(f))
        time.sleep(600)
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))


def faults(fault: str) -> list[tuple[object, str, object]]:
    """``(object, attribute, replacement)`` for ``fault``: ``hang_save`` / ``enospc_save``: the checkpoint's
    (temp-file) ``torch.save`` writes half, then hangs / raises ENOSPC; ``hang_report`` / ``enospc_report``: the
    report's (temp-file) ``Path.write_text`` does so. Every other write is untouched."""
    if fault in {"hang_save", "enospc_save"}:
        import io

        import torch

        save = torch.save

        def faulty_save(obj, f, *args, **kwargs):
            if not _is_temp(f):
                return save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            save(obj, buf, *args, **kwargs)
            _half_then(f, buf.getvalue(), fault)

        return [(torch, "save", faulty_save)]
    if fault in {"hang_report", "enospc_report"}:
        write_text = Path.write_text

        def faulty_write_text(self, data, *args, **kwargs):
            if not (_is_temp(self) and "_report." in self.name):
                return write_text(self, data, *args, **kwargs)
            _half_then(self, data.encode(), fault)

        return [(Path, "write_text", faulty_write_text)]
    raise ValueError(fault)


def install_fault(fault: str) -> None:
    for obj, name, new in faults(fault):
        setattr(obj, name, new)


# --- callbacks a run spec can ask for (importable, so they reach DDP workers by reference) ----------------------------
def count_batches(trainer):
    """on_train_batch_start: ``trainer._test_batch`` (0-based batch of the epoch) and ``_test_started`` (batches of
    the epoch started), counted independently of the plugin."""
    trainer._test_batch = 0 if getattr(trainer, "_test_epoch", None) != trainer.epoch else trainer._test_batch + 1
    trainer._test_epoch = trainer.epoch
    trainer._test_started = trainer._test_batch + 1


def reset_count(trainer):
    """on_train_epoch_start: no batch of the epoch started yet."""
    trainer._test_started = 0


def hang_at(trainer):
    """on_train_batch_start: at epoch/batch ``ULTRA_PRUNE_TEST_HANG=e,b`` (0-based; rank -1/0) log where training
    is, write the marker file ``ULTRA_PRUNE_TEST_MARKER`` and sleep, to be killed by the test."""
    same_epoch = getattr(trainer, "_hang_epoch", None) == trainer.epoch
    trainer._hang_batch, trainer._hang_epoch = (trainer._hang_batch + 1 if same_epoch else 0), trainer.epoch
    e, b = (int(x) for x in os.environ["ULTRA_PRUNE_TEST_HANG"].split(","))
    if rank() in {-1, 0} and (trainer.epoch, trainer._hang_batch) == (e, b):
        target = _state["target"]
        log("hang", epoch=e, batch=b, progress=(e + b / len(trainer.train_loader)) / trainer.epochs,  # b batches done
            chosen=target.chosen_count() if target else None, scale=target.scale if target else None)
        Path(os.environ["ULTRA_PRUNE_TEST_MARKER"]).write_text(f"{e},{b}")
        time.sleep(600)


def die_after_epoch(trainer):
    """on_fit_epoch_end: rank -1/0 kills itself (SIGKILL) after epoch ``ULTRA_PRUNE_TEST_DIE`` (0-based), i.e. after
    that epoch's last.pt is saved."""
    if rank() in {-1, 0} and trainer.epoch == int(os.environ["ULTRA_PRUNE_TEST_DIE"]):
        log("die", epoch=trainer.epoch)
        os.kill(os.getpid(), signal.SIGKILL)


CALLBACKS = {"hang": [("on_train_batch_start", hang_at)], "die": [("on_fit_epoch_end", die_after_epoch)],
             "count": [("on_train_epoch_start", reset_count), ("on_train_batch_start", count_batches)]}


def main(spec_path: str) -> None:
    """Run a spec: {"model": path, "method": "train"|"prune", "kwargs": {...}, "callbacks": [names]}."""
    log("start")
    install()
    from ultralytics import YOLO

    spec = json.loads(Path(spec_path).read_text())
    model = YOLO(spec["model"])
    for name in spec.get("callbacks", []):
        for event, fn in CALLBACKS[name]:
            model.add_callback(event, fn)
    getattr(model, spec.get("method", "train"))(**spec["kwargs"])
    log("done")


# --- checks shared by the tests --------------------------------------------------------------------------------------
def load_model(path):
    """The model of a checkpoint (its EMA while the run is unfinished), fp32, eval mode."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return (ckpt.get("ema") or ckpt["model"]).float().eval()


def zero_channels(model) -> dict:
    """BatchNorm name -> indices of the channels whose gamma and beta are exactly 0."""
    import torch

    out = {}
    for n, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            idx = ((m.weight == 0) & (m.bias == 0)).nonzero().flatten()
            if len(idx):
                out[n] = idx.tolist()
    return out


def assert_prunes_exactly(last: Path, out: Path, chosen_count: int, imgsz: int, target: float = 0.5):
    """Pruning ``last`` with no ``prune=`` (the run's recorded target) removes exactly its zeroed channels, which are
    the run's ``chosen_count`` chosen ones, and leaves the outputs as they were (a random image,
    relative error < 1e-4). Returns the PruneReport."""
    import torch

    from ultra_prune.commands.prune import prune

    model = load_model(last)
    zeros = sum(len(v) for v in zero_channels(model).values())
    assert zeros == chosen_count, (zeros, chosen_count)
    pruned, report = prune(str(last), prune_out=out, verbose=False)
    assert report.prune == target
    widths = lambda m: sum(b.num_features for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d))
    assert widths(model) - widths(pruned) == zeros
    x = torch.rand(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0, y1 = model(x)[0], pruned.float().eval()(x)[0]
    assert ((y0 - y1).abs().max() / y0.abs().max()).item() < 1e-4
    return report


# --- for the tests --------------------------------------------------------------------------------------------------
def support_env(folder: Path, world: int = 0, log_file: Path | None = None, **extra) -> dict:
    """The environment of a test's training subprocess: the sitecustomize that reaches DDP workers, the world size of
    a CPU DDP run (0: a plain single-process run), the log file."""
    site = Path(folder) / "site"
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(world=WORLD, fault=FAULT, here=str(HERE)))
    env = {k: v for k, v in os.environ.items() if k not in {WORLD, LOG, FAULT, MARKER_FILE, "ULTRA_PRUNE_DISABLE",
                                                            "LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT",
                                                            "MASTER_ADDR"}}
    path = [str(site), str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
    env.update(YOLO_OFFLINE="1", PYTHONPATH=os.pathsep.join(path), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if world:
        env[WORLD] = str(world)
    if log_file:
        env[LOG] = str(log_file)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write_spec(folder: Path, model, kwargs: dict, method="train", callbacks=()) -> Path:
    spec = Path(folder) / f"spec_{time.monotonic_ns()}.json"
    spec.write_text(json.dumps({"model": str(model), "method": method, "kwargs": kwargs, "callbacks": list(callbacks)}))
    return spec


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL the subprocess and everything it started (it leads its own session)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=60)


def run(cmd: list[str], env: dict, cwd, timeout: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill the whole group (DDP workers included) and fail."""
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(p)
        out = p.stdout.read() if p.stdout else ""
        raise AssertionError(f"{' '.join(map(str, cmd))} ran past {timeout}s; killed. Output tail:\n{out[-4000:]}")
    # nothing it started may outlive it (a DDP worker of a failed run)
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return subprocess.CompletedProcess(cmd, p.returncode, out, "")


def start(cmd: list[str], env: dict, cwd) -> subprocess.Popen:
    """Start ``cmd`` in its own session (so that ``kill_group`` reaches everything it starts); its output goes to an
    anonymous temporary file (nothing is written in ``cwd``)."""
    import tempfile

    out = tempfile.TemporaryFile("w+")
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    p.out = out
    return p


def output(p: subprocess.Popen) -> str:
    p.out.flush()
    p.out.seek(0)
    return p.out.read()


def kill_at_marker(p: subprocess.Popen, marker: Path, timeout: float) -> None:
    """Wait until ``p`` writes ``marker`` (it then hangs), then SIGKILL its whole group; fail if it ends first or
    takes longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if p.poll() is not None:
            raise AssertionError(f"exited ({p.returncode}) before the kill point:\n{output(p)[-4000:]}")
        if time.monotonic() > deadline:
            kill_group(p)
            raise AssertionError(f"no kill point within {timeout}s:\n{output(p)[-4000:]}")
        time.sleep(0.05)
    kill_group(p)
    assert p.returncode == -signal.SIGKILL, p.returncode


def train_script_cmd(folder: Path, model, kwargs: dict, method="train", callbacks=()) -> list[str]:
    spec = write_spec(folder, model, kwargs, method, callbacks)
    return [sys.executable, str(HERE / "ddp_support.py"), str(spec)]


def train_script(folder: Path, model, kwargs: dict, env: dict, timeout: float, method="train", callbacks=()):
    """Run ``YOLO(model).<method>(**kwargs)`` in a subprocess (this module installed); the CompletedProcess."""
    spec = write_spec(folder, model, kwargs, method, callbacks)
    return run([sys.executable, str(HERE / "ddp_support.py"), str(spec)], env, folder, timeout)


if __name__ == "__main__":  # run as the module, so callbacks pickle by reference (ddp_support.hang_at)
    import ddp_support

    ddp_support.main(sys.argv[1])

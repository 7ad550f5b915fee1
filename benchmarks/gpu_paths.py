"""d. The first CUDA run of every recipe (``gpu_check.py`` runs these rows after its own).

Each row runs a path that only a GPU exercises, as a user would run it, and says PASS/FAIL with its numbers:

- ``sparsity_target=0.5 prune_at_zero=True amp=True`` for ``prune_by`` channels, flops and latency (torch runtime
  on the training device); the channels run is stopped after its first epoch and resumed from that ``last.pt``;
- logit distillation (``distill_model=``) one epoch under ``amp=True``;
- one-shot ``prune=`` through ``prune_for_training`` in a 1-rank NCCL process group;
- ``device=0``, ``"0"`` and ``"cuda:0"`` for the torch latency runtime and the Taylor scores;
- the per-step host-device syncs of sparse training, under ``torch.cuda.set_sync_debug_mode("warn")``, with and
  without ``compile=True``, and the step time against the stock trainer (the goal: at most 2 % more);
- one-shot ``prune=`` → fine-tune → ``export(format='engine', half=True)`` where TensorRT is installed.

Each check returns ``(name, ok, detail)`` tuples (``ok`` None: skipped); ``gpu_check.py`` makes them rows.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

EPOCHS, IMGSZ, BATCH = 3, 128, 16
OVERHEAD = 0.02  # the goal: a sparse-training step at most 2 % slower than the stock one


def _train(weights, data, project: Path, name: str, device, callbacks=None, **kw):
    """A short amp=True run; returns the trainer."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    seen = {}
    model.add_callback("on_train_end", lambda tr: seen.update(trainer=tr))
    for event, fn in (callbacks or {}).items():
        model.add_callback(event, fn)
    args = dict(data=str(data), epochs=EPOCHS, imgsz=IMGSZ, batch=BATCH, workers=2, device=device, amp=True,
                plots=False, project=str(project), name=name, exist_ok=True, verbose=False, seed=0, val=False)
    model.train(**{**args, **kw})
    return seen.get("trainer")


def _params(path: Path) -> int:
    from ultra_prune.io.checkpoint import load_model

    return sum(p.numel() for p in load_model(path)[0].parameters())


def target_rows(data, project: Path, device) -> list:
    """sparsity_target=0.5 prune_at_zero=True amp=True, one row per prune_by; the first is also resumed."""
    rows = []
    base = sum(p.numel() for p in __import__("ultralytics").YOLO("yolov8n.yaml").model.parameters())
    for by in ("channels", "flops", "latency"):
        name, t0 = f"d. sparsity_target prune_at_zero amp ({by})", time.perf_counter()
        kw = dict(sparsity_target=0.5, prune_at_zero=True, prune_by=by, latency_runtime="torch", epochs=5)
        if by == "channels":  # stopped after its first epoch, then resumed from that last.pt

            def stop(trainer):
                raise KeyboardInterrupt("stopped after one epoch to resume")

            try:
                _train("yolov8n.yaml", data, project, name=f"target_{by}", device=device,
                       callbacks={"on_fit_epoch_end": stop}, **kw)
            except KeyboardInterrupt:
                pass
            _train(project / f"target_{by}" / "weights" / "last.pt", data, project, f"target_{by}", device,
                   resume=True)
        else:
            _train("yolov8n.yaml", data, project, f"target_{by}", device, **kw)
        last = project / f"target_{by}" / "weights" / "last.pt"
        n = _params(last)
        ok = n < 0.8 * base
        rows.append((name, ok, f"last.pt {n:,} params of {base:,} ({time.perf_counter() - t0:.0f} s)"))
    return rows


def distill_row(data, project: Path, device) -> list:
    name = "d. logit distillation amp=True"
    teacher = project / "target_flops" / "weights" / "last.pt"
    trainer = _train(teacher, data, project, "distill", device, epochs=1, prune=0.3, distill_model=str(teacher))
    crit = getattr(getattr(trainer, "model", None), "criterion", None)
    last = float(getattr(crit, "last", float("nan")))
    ok = type(crit).__name__ == "DistillCriterion" and last == last and bool(trainer.amp)
    return [(name, ok, f"criterion {type(crit).__name__}, last distillation loss {last:.4f}, amp {bool(trainer.amp)}")]


def nccl_row(project: Path, device) -> list:
    from ultralytics import YOLO

    from ultra_prune.config.settings import PruneConfig
    from ultra_prune.train.architecture import prune_for_training

    name = "d. one-shot prune= on a 1-rank NCCL group"
    torch.distributed.init_process_group("nccl", init_method=f"file://{project / 'nccl'}", rank=0, world_size=1)
    try:
        model = YOLO("yolov8n.yaml").model
        cfg = PruneConfig(0.5, "flops", "l1", round_to=8, imgsz=IMGSZ)
        pruned, report = prune_for_training(model, cfg, None, device, verbose=False)
    finally:
        torch.distributed.destroy_process_group()
    ok = report is not None and all(t.device.type == "cpu" for t in pruned.state_dict().values())
    return [(name, ok, f"{report.removed_channels if report else 0} channels removed, weights broadcast on {device}")]


def device_rows(data) -> list:
    from ultralytics import YOLO

    from ultra_prune.engine.calibrate import taylor_scores
    from ultra_prune.latency.runtimes import runtime_for

    rows, model = [], YOLO("yolov8n.yaml").model
    for device in (0, "0", "cuda:0"):
        runtime = runtime_for("torch", device)
        scores = taylor_scores(model, data, IMGSZ, BATCH, batches=2, device=device)
        where = {str(v.device) for v in scores.values()}
        ok = runtime.device == torch.device("cuda", 0) and where == {"cuda:0"}
        rows.append((f"d. device={device!r}", ok,
                     f"latency runtime on {runtime.device}, Taylor scores on {sorted(where)}; key {runtime.key()}"))
    return rows


def _step_time(data, project: Path, device, name: str, **kw) -> tuple[float, int]:
    """Median seconds per optimizer step of epochs 2-3 and the syncs per step that CUDA's sync debug mode saw."""
    times, syncs = [], []
    state = {}

    def start(trainer):
        torch.cuda.synchronize(device)
        state["t"] = time.perf_counter()

    def end(trainer):
        torch.cuda.synchronize(device)
        if trainer.epoch >= 1:
            times.append(time.perf_counter() - state["t"])

    def optimizer_step_counted(trainer):
        step = trainer.optimizer_step

        def counted():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    step()
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            syncs.append(sum("synchroniz" in str(w.message) for w in caught))

        trainer.optimizer_step = counted

    _train("yolov8n.yaml", data, project, name, device, nbs=BATCH,
           callbacks={"on_train_batch_start": start, "on_train_batch_end": end,
                      "on_pretrain_routine_end": optimizer_step_counted}, **kw)
    times.sort()
    return times[len(times) // 2], max(syncs[len(syncs) // 2:] or [0])


def step_rows(data, project: Path, device) -> list:
    stock, stock_syncs = _step_time(data, project, device, "stock")
    rows = []
    for tag, kw in (("sparsity_target=0.5", dict(sparsity_target=0.5)),
                    ("sparsity=1e-3 polar", dict(sparsity=1e-3, sparsity_mode="polar")),
                    ("sparsity_target=0.5 compile=True", dict(sparsity_target=0.5, compile=True))):
        t, syncs = _step_time(data, project, device, tag.replace("=", "_").replace(" ", "_"), **kw)
        extra = syncs - stock_syncs
        over = t / stock - 1
        ok = extra <= 0 and (over <= OVERHEAD or "compile" in tag)
        rows.append((f"d. step {tag}", ok, f"{t * 1e3:.1f} ms/step against stock {stock * 1e3:.1f} ms ({over:+.1%}); "
                                           f"syncs per step {syncs} against stock {stock_syncs}"))
    return rows


def tensorrt_row(data, project: Path, device) -> list:
    name = "d. prune= → fine-tune → TensorRT fp16"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return [(name, None, "tensorrt is not installed")]
    from ultralytics import YOLO

    _train("yolov8n.yaml", data, project, "trt", device, epochs=1, prune=0.5, prune_by="flops")
    engine = YOLO(str(project / "trt" / "weights" / "last.pt")).export(format="engine", half=True, imgsz=IMGSZ,
                                                                        device=device)
    result = YOLO(engine)(torch.zeros(1, 3, IMGSZ, IMGSZ).numpy().transpose(0, 2, 3, 1)[0], verbose=False)
    return [(name, bool(result), f"engine {Path(engine).name} ran")]


def checks(project: Path, device) -> list[tuple]:
    """Section d.'s checks as ``(name, function, args)``, in order (the distillation uses the flops run's model)."""
    from ultra_prune.commands.dataset import make_dataset

    data = make_dataset(project / "data_d", n_train=64, n_val=16, imgsz=IMGSZ)
    return [("d. sparsity_target runs", target_rows, (data, project, device.index)),
            ("d. distillation", distill_row, (data, project, device.index)),
            ("d. NCCL", nccl_row, (project, device)),
            ("d. device arguments", device_rows, (data,)),
            ("d. steps", step_rows, (data, project, device.index)),
            ("d. TensorRT", tensorrt_row, (data, project, device.index))]

"""Sparse training to a target (``sparsity_target``, ``prune_by``): selection, FLOPs counting, the schedule, exact
pruning of the zeroed channels, and real training runs with the stock optimizers."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn

from conftest import IMGSZ, train_kwargs
from helpers import bn_widths, build, tensors
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import analyse, channel_widths, flops_model, prune_model
from ultra_prune.pruning.importance import LayerRelative, Magnitude
from ultra_prune.pruning.select import Channels, Flops, select
from ultra_prune.engine.report import gflops
from ultra_prune.slimming.target import FREEZE, ZERO, SparsityTarget, envelope


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo11n.yaml"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_channel_target_is_reached_with_floors_and_rounding(yaml, target):
    model = build(yaml)
    roots = analyse(model).roots()
    keep = select(roots, Channels(target), LayerRelative(), round_to=8, floor=8)
    prunable = sum(s.size for s in roots if s.prunable)
    removed = sum(s.size - len(k) for s, k in keep.items())
    assert target <= removed / prunable < target + 0.1
    for s, k in keep.items():
        assert len(k) >= min(8, s.size) and len(k) % 8 == 0 and len(k) < s.size
        assert k.unique().numel() == len(k)


@pytest.mark.parametrize("yaml", ["yolov8n.yaml", "yolo11n.yaml", "yolo26n.yaml"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_flops_target_is_reached_as_ultralytics_counts(yaml, target):
    """``prune_by=flops``: the pruned model's GFLOPs by ultralytics' own counter are at most 1 - target."""
    model = build(yaml)
    pruned, info = prune_model(model, target, prune_by="flops", imgsz=128)
    ratio = gflops(pruned, 128) / gflops(model, 128)
    assert 1 - target - 0.06 < ratio <= 1 - target
    assert info["removed_channels"] < target * info["prunable_channels"]  # FLOPs, not channels, were counted


def test_flops_model_matches_ultralytics_counter_after_pruning():
    model = build("yolov8n.yaml")
    fm = flops_model(model, 128)
    roots = analyse(model).roots()
    select(roots, Flops(0.5, fm), Magnitude())  # prune_model's default importance, l1
    pruned, _ = prune_model(model, 0.5, prune_by="flops", imgsz=128)
    assert math.isclose(fm.total - fm.removed(), gflops(pruned, 128) * 1e9, rel_tol=1e-3)


def test_envelope_schedule():
    assert envelope(0.0) == 1.0 and envelope(ZERO) == 0.0 and envelope(1.0) == 0.0
    values = [envelope(p / 100) for p in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert 0 < FREEZE < ZERO < 1


@pytest.mark.parametrize("prune_by", ["channels", "flops"])
def test_zeroed_channels_prune_exactly_and_completely(prune_by):
    """After the schedule ends, the chosen channels have gamma = beta = 0 in the model and its EMA copy; pruning at
    the recorded target removes exactly them (none left, none more) and the outputs match, borders included."""
    import copy

    model = build("yolov8n.yaml")
    ema = copy.deepcopy(model)
    t = SparsityTarget(0.5, prune_by, imgsz=IMGSZ)
    t.choose(model)
    assert t.reached(model) == 0
    t.step([model, ema], 0.3)
    assert t.scale == pytest.approx(envelope(0.3))
    t.step([model, ema], ZERO + 0.01)
    for m in (model, ema):
        mods = dict(m.named_modules())
        for name, idx in t.chosen.items():
            assert (mods[name].weight[idx] == 0).all() and (mods[name].bias[idx] == 0).all()
    assert t.reached(ema) >= 0.5
    zeros_before = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert zeros_before == t.chosen_count()

    pruned, info = prune_model(model, 0.5, prune_by=prune_by, imgsz=IMGSZ, take_dead=True)
    assert sum(int((m.weight == 0).sum()) for m in pruned.modules() if isinstance(m, nn.BatchNorm2d)) == 0
    assert sum(bn_widths(model)) - sum(bn_widths(pruned)) == zeros_before
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0, y1 = model.eval()(x)[0], pruned.eval()(x)[0]
    assert ((y0 - y1).abs().max() / y0.abs().max()).item() < 1e-5


def test_reselection_keeps_zeroed_channels():
    model = build("yolov8n.yaml")
    t = SparsityTarget(0.5, imgsz=IMGSZ)
    t.choose(model)
    t.step([model], 1.0)
    first = {k: v.clone() for k, v in t.chosen.items()}
    t.choose(model)  # e.g. on resume: the zeroed channels are chosen again
    assert first.keys() == t.chosen.keys() and all(torch.equal(first[k], t.chosen[k]) for k in first)


@pytest.mark.parametrize("args, message", [
    ({"sparsity_target": 1.5}, "out of range"),
    ({"sparsity_target": 0.5, "sparsity": 1.0}, "cannot be combined"),
    ({"prune_by": "params"}, "prune_by"),
])
def test_bad_target_arguments(args, message):
    from ultra_prune.config.keys import validate

    with pytest.raises(UltraPruneError, match=message):
        validate(args)


def read_csv(path):
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["auto", "SGD"])
def test_training_reaches_the_target_with_any_optimizer(tmp_path, data_yaml, optimizer):
    """5 epochs with SGD and with ``auto`` (AdamW at a run this short) at their own lr: the saved model has >= target
    zeroed, results.csv tracks it, and ``prune`` with no ``prune=`` removes exactly the zeroed channels with unchanged
    outputs."""
    from ultralytics import YOLO

    from ultra_prune.commands.prune import prune

    plots = optimizer == "auto"  # (drawn alike with any optimizer; ultralytics' plots cost seconds a run)
    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "t", epochs=5, optimizer=optimizer,
                                                                  sparsity_target=0.5, plots=plots))
    run = tmp_path / "t"
    rows = read_csv(run / "results.csv")
    assert len(rows) == 5 and float(rows[-1]["sparsity/target"]) == 0.5
    reached = [float(r["sparsity/reached"]) for r in rows]
    assert reached[0] < 0.5 <= reached[-1]
    assert not plots or (run / "gamma_hist.png").stat().st_size > 0

    last = run / "weights" / "last.pt"
    model = YOLO(str(last)).model.float().eval()
    pruned, report = prune(str(last), prune_out=tmp_path / "p.pt", imgsz=IMGSZ, verbose=False)
    assert report.prune == 0.5 and report.prune_by == "channels"
    assert report.removed_channels >= 0.5 * report.prunable_channels
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert zeros > 0 and sum(bn_widths(model)) - sum(bn_widths(pruned)) == zeros
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    with torch.no_grad():
        y0, y1 = model(x)[0], pruned.float().eval()(x)[0]
    assert ((y0 - y1).abs().max() / y0.abs().max()).item() < 1e-5
    assert channel_widths(pruned)[1] != channel_widths(model)[1]


def test_prune_without_ratio_needs_a_recorded_target(sparse_ckpt, tmp_path):
    from ultra_prune.commands.prune import prune

    with pytest.raises(UltraPruneError, match="'prune' is missing"):
        prune(str(sparse_ckpt), prune_out=tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()


def test_taylor_scores_steer_the_choice():
    """With observed gradients, channels whose removal changes the loss least are chosen, across layers."""
    model = build("yolov8n.yaml").train()
    t = SparsityTarget(0.3, imgsz=IMGSZ)
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    out = model(x)
    loss = sum(o.float().pow(2).mean() for o in tensors(out))
    loss.backward()
    t.observe(model, grad_scale=4.0)
    bn = model.model[0].bn
    expected = (bn.weight * bn.weight.grad + bn.bias * bn.bias.grad).abs().detach() / 4.0
    torch.testing.assert_close(t.taylor["model.0.bn"], expected)
    scores = {n: v.clone() for n, v in t.taylor.items()}
    t.choose(model)
    assert not t.taylor  # scores are used once, for this choice
    # in a space with a single BatchNorm (no residual partner, no depthwise follower), the chosen channels are the
    # lowest-scored ones of that layer
    names = {m: n for n, m in model.named_modules()}
    spaces = [s for s in analyse(model).roots() if s.prunable and len(s.producers) == 1 and not s.depthwise]
    per_bn = {}
    for s in spaces:
        per_bn.setdefault(names[s.producers[0][0].bn], []).append(s)
    checked = 0
    for name, (space,) in ((n, ss) for n, ss in per_bn.items() if len(ss) == 1 and n in t.chosen):
        offset, idx = space.producers[0][1], t.chosen[name]
        mine = idx[(idx >= offset) & (idx < offset + space.size)]  # a C2f cv1 BatchNorm holds two spaces
        if len(mine):
            lowest = torch.argsort(scores[name][offset : offset + space.size], stable=True)[: len(mine)]
            assert set(mine.tolist()) == set((lowest + offset).tolist()), name
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("args", [{"sparsity_target": 0.5}, {"sparsity": 0.5}, {"prune": 0.5}])
def test_unsupported_model_refuses_the_arguments(tmp_path, data_yaml, args):
    """An RT-DETR model (its own trainer) is refused before any run folder is made, not trained without sparsity."""
    from ultralytics import RTDETR

    with pytest.raises(UltraPruneError, match=r"RTDETR \(its own trainer\) is not supported by ultra-prune"):
        RTDETR("yolov8n-rtdetr.yaml").train(**train_kwargs(tmp_path, "rt", data=str(data_yaml), **args))
    assert not (tmp_path / "rt").exists()


def test_other_models_keep_their_own_trainer():
    """Without ultra-prune arguments RT-DETR trains with its own trainer; every YOLO task gets ultra-prune's, which
    extends the stock one."""
    from ultralytics import RTDETR, YOLO

    from ultra_prune.patches.model import trainer_for_model

    assert trainer_for_model(RTDETR("yolov8n-rtdetr.yaml")) is None
    for yaml in ("yolov8n.yaml", "yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolov8n-cls.yaml"):
        model = YOLO(yaml)
        ours = trainer_for_model(model)
        assert issubclass(ours, model.task_map[model.task]["trainer"]) and ours.__module__ == "ultra_prune.train.trainer"


def test_unsupported_model_refused_by_the_yolo_cli(tmp_path, data_yaml):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "yolo"
    r = subprocess.run([str(exe), "train", "model=yolov8n-rtdetr.yaml", f"data={data_yaml}", "sparsity_target=0.5",
                        f"project={tmp_path}", "epochs=1", "imgsz=64", "device=cpu"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [line for line in (r.stdout + r.stderr).splitlines() if "not supported by ultra-prune" in line]
    assert len(err) == 1 and "Traceback" not in r.stderr


@pytest.mark.slow
def test_target_reached_when_an_epoch_has_no_optimizer_step(tmp_path, data_yaml):
    """3 batches of 8 with nbs=64: no optimizer step happens in the single epoch, yet the target is met."""
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "t1", epochs=1, sparsity_target=0.5,
                                                                  prune_by="flops", nbs=64))
    rows = read_csv(tmp_path / "t1" / "results.csv")
    assert float(rows[-1]["sparsity/reached"]) >= 0.5


@pytest.mark.slow
def test_target_run_resumes_and_still_reaches_the_target(tmp_path, data_yaml):
    from ultralytics import YOLO

    def stop(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt("simulated interruption")

    model = YOLO("yolov8n.yaml")
    model.add_callback("on_fit_epoch_end", stop)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(data_yaml), **train_kwargs(tmp_path, "r", epochs=5, sparsity_target=0.5, nbs=8))
    last = tmp_path / "r" / "weights" / "last.pt"
    YOLO(str(last)).train(resume=True)
    rows = read_csv(tmp_path / "r" / "results.csv")
    assert len(rows) == 5 and float(rows[-1]["sparsity/reached"]) >= 0.5


@pytest.mark.slow
def test_a_resumed_target_run_makes_the_choice_an_uninterrupted_run_makes(tmp_path, data_yaml):
    """Interrupted after epoch 1 of 4 (the first choice made, the next one due at epoch 2's start, from scores
    gathered since), then resumed: the scores, the choice and the envelope come back from last.pt, so the choice
    at epoch 2 is the uninterrupted run's (same seed, deterministic)."""
    import hashlib

    from ultralytics import YOLO

    def choice_at_epoch_2(model, seen, stop_after_first=False):
        def record(trainer):
            if trainer.epoch == 1 and 1 not in seen:
                chosen = trainer.parts[0].target.chosen
                seen[1] = hashlib.sha1(b"".join(k.encode() + chosen[k].numpy().tobytes() for k in sorted(chosen)))

        def stop(trainer):
            if stop_after_first and trainer.epoch == 0:
                raise KeyboardInterrupt("simulated interruption")

        model.add_callback("on_train_batch_start", record)
        model.add_callback("on_fit_epoch_end", stop)

    kw = dict(epochs=4, sparsity_target=0.5, seed=0, deterministic=True, nbs=8)  # a step per batch
    full, resumed = {}, {}
    model = YOLO("yolov8n.yaml")
    choice_at_epoch_2(model, full)
    model.train(data=str(data_yaml), **train_kwargs(tmp_path, "full", **kw))
    model = YOLO("yolov8n.yaml")
    choice_at_epoch_2(model, {}, stop_after_first=True)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(data_yaml), **train_kwargs(tmp_path, "cut", **kw))
    last = tmp_path / "cut" / "weights" / "last.pt"
    state = getattr(torch.load(last, weights_only=False)["ema"], "ultra_prune_training")["TargetSchedule"]
    assert state["chosen"] and state["taylor"] and 0 < state["scale"] < 1
    model = YOLO(str(last))
    choice_at_epoch_2(model, resumed)
    model.train(resume=True)
    assert resumed[1].hexdigest() == full[1].hexdigest()

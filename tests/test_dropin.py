"""Installing ultra-prune leaves stock runs stock, and the traps a new user falls into: which trainer a run gets,
distillation, the recorded prune of a target run (its imgsz, exactly its zeroed channels, early checkpoints),
results.csv columns without validation, best.pt after the zero point, and the ``yolo`` CLI's help, cfg and errors.
"""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import IMGSZ, train_kwargs
from helpers import bn_total, build, n_zero_bn
from ultra_prune.config.keys import native_distillation, resolve_distill_loss, validate
from ultra_prune.io.checkpoint import load_model, save_model
from ultra_prune.errors import UltraPruneError
from ultra_prune.slimming.target import ZERO, SparsityTarget


def read_csv(path):
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


def run_cli(args: str, log: list) -> int:
    """The patched stock entrypoint on ``yolo <args>``, in-process; returns the exit code."""
    from ultralytics import cfg

    try:
        cfg.entrypoint(debug="yolo " + args)
    except SystemExit as e:
        return e.code
    return 0


# --- which trainer a run gets ------------------------------------------------------------------------------------------
def test_a_run_with_no_ultra_prune_argument_uses_the_stock_trainer(tmp_path, data_yaml):
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer

    model = YOLO("yolov8n.yaml")
    model.train(data=str(data_yaml), **train_kwargs(tmp_path, "plain"))
    assert type(model.trainer) is DetectionTrainer


@pytest.mark.skipif(not native_distillation(), reason="this ultralytics ships no distillation of its own")
def test_plain_distillation_is_ultralytics_own(tmp_path, data_yaml, sparse_ckpt, log):
    """``distill_model=`` alone is ultralytics' feature distillation through its own trainer, as without the plugin."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.nn.distill_model import DistillationModel

    model = YOLO("yolov8n.yaml")
    seen = []
    model.add_callback("on_train_start", lambda t: seen.append(type(t.model)))
    model.train(data=str(data_yaml), **train_kwargs(tmp_path, "kd", distill_model=str(sparse_ckpt)))
    assert type(model.trainer) is DetectionTrainer and seen == [DistillationModel]
    assert not [m for m in log if "ultra-prune" in m]


class FakeModel(SimpleNamespace):
    """What ``needs_slim_trainer`` reads of an ultralytics ``Model``: its module and its checkpoint dict."""


@pytest.mark.parametrize("kwargs, ckpt_args, pruned, slim", [
    ({}, {}, False, False),
    ({"epochs": 3, "prune_round": 16, "prune_by": "flops"}, {}, False, False),  # options of a mode not in use
    ({"distill_model": "t.pt"}, {}, False, not native_distillation()),
    ({"distill_model": "t.pt", "distill_loss": "logit"}, {}, False, True),
    ({"distill_model": "t.pt", "distill_loss": "feature"}, {}, False, not native_distillation()),  # else refused
    ({"sparsity": 1e-3}, {}, False, True),
    ({"sparsity_target": 0.5}, {}, False, True),
    ({"prune": 0.5}, {}, False, True),
    ({}, {}, True, True),  # a pruned checkpoint
    ({"resume": True}, {"sparsity_target": 0.5}, False, True),  # resuming a sparse run
    ({"resume": True}, {"sparsity_target": 0.0}, False, False),
    ({}, {"sparsity_target": 0.5}, False, False),  # a new run from a sparse checkpoint, without the argument
])
def test_which_runs_get_the_slim_trainer(kwargs, ckpt_args, pruned, slim):
    from ultra_prune.patches.model import needs_slim_trainer
    from ultra_prune.pruning import MARKER

    module = nn.Module()
    if pruned:
        setattr(module, MARKER, {"history": []})
    model = FakeModel(model=module, ckpt={"train_args": ckpt_args} if ckpt_args else {})
    assert needs_slim_trainer(model, kwargs) is slim


def test_distill_loss_auto_is_logit_only_for_detection():
    assert resolve_distill_loss("auto", "detect") == "logit"
    expected = "feature" if native_distillation() else "logit"
    assert all(resolve_distill_loss("auto", t) == expected for t in ("segment", "pose", "obb", "classify"))
    assert resolve_distill_loss("feature", "detect") == "feature" and resolve_distill_loss("logit", "pose") == "logit"


def test_prune_and_sparsity_target_together_are_refused(tmp_path, data_yaml):
    from ultralytics import YOLO

    with pytest.raises(UltraPruneError, match="cannot be combined.*sparsity_target= alone"):
        validate({"prune": 0.5, "sparsity_target": 0.5})
    with pytest.raises(UltraPruneError, match="cannot be combined"):
        YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "both", prune=0.5, sparsity_target=0.5))
    assert not (tmp_path / "both").exists()


# --- the recorded prune of a sparsity_target checkpoint ----------------------------------------------------------------
def target_checkpoint(path, yaml="yolo11n.yaml", target=0.5, prune_by="flops", imgsz=160, epoch=-1, epochs=10,
                      zero=True):
    """A checkpoint as a ``sparsity_target`` run writes it: the chosen channels at zero (``zero``) and the run's
    arguments recorded; ``epoch`` >= 0 is a checkpoint from the middle of the run."""
    model = build(yaml)
    t = SparsityTarget(target, prune_by, imgsz=imgsz)
    t.choose(model)
    if zero:
        t.step([model], ZERO + 0.01)
    args = {"sparsity_target": target, "prune_by": prune_by, "prune_round": 8, "prune_min": 8, "imgsz": imgsz,
            "epochs": epochs}
    save_model(model, path, {"train_args": args})
    if epoch >= 0:
        ckpt = torch.load(path, weights_only=False)
        ckpt["epoch"] = epoch
        torch.save(ckpt, path)
    return model


def test_recorded_prune_counts_at_the_runs_imgsz_and_removes_exactly_the_zeroed_channels(tmp_path, log):
    """yolo11n (C2PSA attention: its FLOPs share depends on the resolution) trained to half its GFLOPs at 160 px:
    counted at 640 px its zeroed channels are short of the target, so a prune counting there would cut live ones."""
    from ultra_prune.commands.prune import prune

    src = tmp_path / "sparse.pt"
    model = target_checkpoint(src)
    assert SparsityTarget(0.5, "flops", imgsz=160).reached(model) >= 0.5
    assert SparsityTarget(0.5, "flops", imgsz=640).reached(model) < 0.5  # what the 640-px count saw
    zeros = n_zero_bn(model)
    pruned, report = prune(str(src), verbose=False)
    assert report.imgsz == 160 and report.prune == 0.5 and report.prune_importance == "zeroed"
    assert bn_total(model) - bn_total(pruned) == zeros and n_zero_bn(pruned) == 0
    assert "drove to zero" in report.text() and not [m for m in log if "ultra-prune" in m]
    x = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y0, y1 = model.eval()(x)[0], pruned.float().eval()(x)[0]
    assert ((y0 - y1).abs().max() / y0.abs().max()).item() < 1e-5


def test_pruning_a_checkpoint_from_before_the_zero_point_warns_and_cuts_no_live_channel(tmp_path, log):
    from ultra_prune.commands.prune import prune

    src = tmp_path / "epoch1.pt"
    target_checkpoint(src, yaml="yolov8n.yaml", prune_by="channels", imgsz=IMGSZ, epoch=1, zero=False)
    before = src.read_bytes()
    assert prune(str(src), verbose=False) == (None, None)
    warnings = [m for m in log if "before its chosen channels reach zero" in m]
    assert len(warnings) == 1 and "20%" in warnings[0] and "last.pt" in warnings[0]
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["epoch1.pt"]


def test_pruning_a_finished_checkpoint_short_of_its_target_says_so(tmp_path, log):
    from ultra_prune.commands.prune import prune

    src = tmp_path / "sparse.pt"
    model = target_checkpoint(src, yaml="yolov8n.yaml", prune_by="channels", imgsz=IMGSZ)
    ckpt = torch.load(src, weights_only=False)
    ckpt["train_args"]["sparsity_target"] = 0.9  # more than this model's zeroed channels
    torch.save(ckpt, src)
    pruned, report = prune(str(src), verbose=False)
    assert bn_total(model) - bn_total(pruned) == n_zero_bn(model)  # exactly the zeroed ones, no live one
    assert len([m for m in log if "short of its sparsity_target=0.9" in m]) == 1


# --- sparse training: results.csv, best.pt, plots, the log -------------------------------------------------------------
@pytest.mark.slow
def test_results_csv_columns_hold_their_values_without_validation(tmp_path, data_yaml, log):
    from ultralytics import YOLO

    lrs = []
    model = YOLO("yolov8n.yaml")
    model.add_callback("on_train_epoch_end", lambda t: lrs.append(t.optimizer.param_groups[0]["lr"]))
    model.train(data=str(data_yaml), **train_kwargs(tmp_path, "noval", epochs=3, val=False, plots=True,
                                                   sparsity_target=0.5))
    run = tmp_path / "noval"
    rows = read_csv(run / "results.csv")
    assert len(rows) == 3
    assert [float(r["sparsity/target"]) for r in rows] == [0.5] * 3
    assert all(math.isclose(float(r["lr/pg0"]), lr, rel_tol=1e-4) for r, lr in zip(rows, lrs))
    reached = [float(r["sparsity/reached"]) for r in rows]
    assert reached[0] < 0.5 <= reached[-1]
    assert (run / "sparsity.png").stat().st_size > 10_000 and (run / "gamma_hist.png").is_file()
    # the choice is logged with the epoch's summary, never in the middle of the progress bar
    at = [i for i, m in enumerate(log) if "chosen to go to zero" in m]
    assert at and all("reached=" in log[i + 1] for i in at)


@pytest.mark.slow
def test_best_pt_comes_from_after_the_zero_point(tmp_path, data_yaml, mocker, log):
    """Validation fitness falls every epoch, so the stock rule would keep epoch 1 (before the zero point at 40 %) as
    best.pt; a sparse-target run keeps only epochs whose chosen channels are zero, and best.pt prunes exactly."""
    from ultralytics import YOLO
    from ultralytics.models.yolo.detect import DetectionTrainer

    from ultra_prune.commands.prune import prune

    fitness = iter([0.9, 0.5, 0.3])

    def validate(self):
        f = next(fitness)
        if self.best_fitness is None or self.best_fitness < f:
            self.best_fitness = f
        return {"metrics/mAP50-95(B)": f}, f

    mocker.patch.object(DetectionTrainer, "validate", validate)
    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "best", epochs=3, sparsity_target=0.5))
    best = tmp_path / "best" / "weights" / "best.pt"
    model, _ = load_model(best)
    pruned, report = prune(str(best), prune_out=tmp_path / "p.pt", verbose=False)
    assert report.removed_channels >= 0.5 * report.prunable_channels and n_zero_bn(pruned) == 0
    assert not [m for m in log if "before its chosen channels reach zero" in m or "short of" in m]


# --- the yolo CLI --------------------------------------------------------------------------------------------------------
def test_a_misspelled_key_is_one_line_with_the_suggestion(tmp_path, monkeypatch, log):
    monkeypatch.chdir(tmp_path)
    code = run_cli("train model=yolov8n.yaml sparsity_targt=0.5", log)
    errors = [m for m in log if "ERROR" in m or "not a valid YOLO argument" in m]
    assert code == 2 and len(errors) == 1
    assert "'sparsity_targt' is not a valid YOLO argument" in errors[0] and "sparsity_target" in errors[0]
    assert "\n" not in errors[0] and not list(tmp_path.iterdir())


def test_yolo_help_and_cfg_show_ultra_prune(log):
    from ultra_prune.config.keys import KEYS as ARGS

    assert run_cli("help", log) == 0
    text = "\n".join(log)
    assert "'prune'" in text and "yolo prune model=" in text
    log.clear()
    assert run_cli("cfg", log) == 0
    text = "\n".join(log)
    assert all(f"{k}: " in text for k in ARGS) and "sparsity_target: 0.0 # share of prunable channels" in text


def test_yolo_prune_help_prints_the_arguments(log):
    assert run_cli("prune help", log) == 0
    text = "\n".join(log)
    assert "prune_by=" in text and "prune_importance=" in text and "latency_runtime=" in text and "_report.txt" in text
    assert "prune_at_zero" not in text  # a training key, not the prune mode's
    assert "missing" not in text and "ERROR" not in text


def test_yolo_prune_points_to_ultra_prune_docs(tmp_path, monkeypatch, log):
    monkeypatch.chdir(tmp_path)
    save_model(build("yolov8n.yaml"), tmp_path / "x.pt")
    assert run_cli("prune model=x.pt prune=0.3 epochs=5", log) == 0
    text = "\n".join(log)
    assert "docs.ultralytics.com/modes/prune" not in text and "Learn more in" in text and "README" in text
    assert "does not use epochs; ignored" in text
    assert (tmp_path / "x_pruned.pt").is_file() and (tmp_path / "x_pruned_report.json").is_file()


def test_yolo_prune_rejects_an_unknown_key_in_one_line(tmp_path, monkeypatch, log):
    monkeypatch.chdir(tmp_path)
    save_model(build("yolov8n.yaml"), tmp_path / "x.pt")
    assert run_cli("prune model=x.pt prune_rond=16", log) == 2
    errors = [m for m in log if "not a valid YOLO argument" in m]
    assert len(errors) == 1 and "prune_round" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]

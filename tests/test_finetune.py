"""Fine-tuning pruned models: the pruned architecture survives train, one-shot prune=, resume, nc change, DDP."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import plain_ultralytics_env, train_kwargs
from helpers import ckpt_params, ddp_probe, n_params

pytestmark = pytest.mark.slow


def test_one_shot_prunes_saves_and_fine_tunes_the_pruned_model(one_shot, sparse_ckpt):
    pruned = ckpt_params(one_shot / "weights" / "pruned.pt")
    assert pruned < 0.8 * ckpt_params(sparse_ckpt)
    assert ckpt_params(one_shot / "weights" / "last.pt") == pruned
    assert ckpt_params(one_shot / "weights" / "best.pt") == pruned
    report = (one_shot / "prune_report.txt").read_text()
    assert "parameters" in report and "GFLOPs" in report and "C2f" in report


def test_pruned_checkpoint_trains_as_itself_and_resumes(tmp_path, one_shot, data_yaml):
    from ultralytics import YOLO

    pruned_pt = one_shot / "weights" / "pruned.pt"
    pruned = ckpt_params(pruned_pt)

    def stop_after_first_epoch(trainer):
        raise KeyboardInterrupt("simulated interruption")

    model = YOLO(str(pruned_pt))
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(data_yaml), **train_kwargs(tmp_path, "ft", epochs=2))
    last = tmp_path / "ft" / "weights" / "last.pt"
    ck = torch.load(last, map_location="cpu", weights_only=False)
    assert ck["epoch"] == 0 and ck["optimizer"] is not None and n_params(ck["ema"]) == pruned

    YOLO(str(last)).train(resume=True)
    assert ckpt_params(last) == pruned
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == -1  # finished: optimizer stripped
    assert len((tmp_path / "ft" / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


def test_new_class_count_reinitialises_class_convs(tmp_path, one_shot):
    from ultralytics import YOLO

    from ultra_prune.commands.dataset import make_dataset

    data2 = make_dataset(tmp_path / "two", n_train=16, n_val=8, imgsz=64, nc=2)
    YOLO(str(one_shot / "weights" / "pruned.pt")).train(data=str(data2), **train_kwargs(tmp_path, "nc2"))
    model = torch.load(tmp_path / "nc2" / "weights" / "best.pt", map_location="cpu", weights_only=False)["model"]
    head = model.model[-1]
    assert head.nc == 2 and all(b[-1].out_channels == 2 for b in head.cv3)
    pruned = torch.load(one_shot / "weights" / "pruned.pt", map_location="cpu", weights_only=False)["model"]
    assert [m.conv.out_channels for m in model.model[:10] if hasattr(m, "conv")] == [
        m.conv.out_channels for m in pruned.model[:10] if hasattr(m, "conv")
    ]


def test_fine_tuned_checkpoint_works_with_plain_ultralytics(tmp_path, one_shot, data_yaml):
    best = one_shot / "weights" / "best.pt"
    code = f"""
        import sys, numpy as np
        from ultralytics import YOLO
        m = YOLO({str(best)!r})
        n = sum(p.numel() for p in m.model.parameters())
        m.predict(np.zeros((64, 64, 3), np.uint8), imgsz=64, verbose=False)
        m2 = YOLO({str(best)!r})
        m2.val(data={str(data_yaml)!r}, imgsz=64, batch=8, plots=False, verbose=False, project={str(tmp_path)!r})
        onnx = YOLO({str(best)!r}).export(format='onnx', imgsz=64)
        print('ultra_prune' in sys.modules, n, onnx.endswith('.onnx'))
    """
    env = plain_ultralytics_env()
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    in_module, n, exported = r.stdout.split()[-3:]
    assert in_module == "False" and int(n) == ckpt_params(best) and exported == "True"


@pytest.mark.parametrize("sparse, printed", [({"sparsity": 0.01}, "0.01"), ({"sparsity_target": 0.5}, "0.5")])
def test_ddp_worker_rebuilds_the_pruned_sparse_trainer(tmp_path, one_shot, data_yaml, sparse, printed):
    """In every rank the trainer has the manual-lambda or the target sparsity, and the pruned model."""
    from ultra_prune.train.trainer import SlimDetectionTrainer

    pruned_pt = one_shot / "weights" / "pruned.pt"
    overrides = train_kwargs(tmp_path, "ddp", model=str(pruned_pt), data=str(data_yaml), **sparse)
    name, value, params = ddp_probe(SlimDetectionTrainer, overrides, tmp_path)
    assert name == "SlimDetectionTrainer" and value == printed
    assert params == ckpt_params(pruned_pt)


def test_iterative_slimming_prune_then_sparse_fine_tune_then_prune(tmp_path, one_shot, data_yaml):
    """prune= with sparsity>0 on an already pruned checkpoint prunes again, then trains sparse."""
    from ultralytics import YOLO

    pruned_pt = one_shot / "weights" / "pruned.pt"
    YOLO(str(pruned_pt)).train(data=str(data_yaml), **train_kwargs(tmp_path, "again", prune=0.3, sparsity=1.0))
    second = tmp_path / "again" / "weights"
    assert ckpt_params(second / "pruned.pt") < ckpt_params(pruned_pt)
    assert ckpt_params(second / "best.pt") == ckpt_params(second / "pruned.pt")
    marker = torch.load(second / "pruned.pt", map_location="cpu", weights_only=False)["ultra_prune"]
    assert [h["prune"] for h in marker["history"]] == [0.5, 0.3]
    assert "sparsity/gamma_mean" in (tmp_path / "again" / "results.csv").read_text()

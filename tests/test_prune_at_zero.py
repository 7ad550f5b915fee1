"""``sparsity_target=... prune_at_zero=True``: one run that removes its zeroed channels as soon as they reach zero
and trains the smaller model on (one learning-rate schedule, the EMA and the optimizer carried over), ending in
pruned last.pt and best.pt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import IMGSZ, train_kwargs
from helpers import bn_widths, build, n_params
from torch import nn

from ultra_prune.train.architecture import remove_zeroed
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import MARKER, is_pruned
from ultra_prune.slimming.target import ZERO, SparsityTarget


def zeroed_trainer():
    """A stand-in trainer: yolov8n with half its channels driven to zero by a sparse target (model and EMA), and
    an SGD optimizer with momentum that has taken one step."""
    from ultralytics.utils.torch_utils import ModelEMA

    model = build("yolov8n.yaml").train()
    holder = ModelEMA(model, updates=5)
    ema = holder.ema
    target = SparsityTarget(0.5, imgsz=IMGSZ)
    target.choose(model)
    target.step([model, ema], ZERO + 0.01)
    groups = [[p for n, p in model.named_parameters() if n.endswith(".bn.weight") or n.endswith(".bn.bias")],
              [p for n, p in model.named_parameters() if not (n.endswith(".bn.weight") or n.endswith(".bn.bias"))]]
    optimizer = torch.optim.SGD([{"params": groups[0], "lr": 0.02}, {"params": groups[1], "lr": 0.01}], momentum=0.9)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    optimizer.step()
    holder.update(model)  # as after every step (ultralytics 8.4 keeps the tensor pairs of its first update)
    target.step([model, ema], ZERO + 0.02)  # held at zero after the step, as in training
    return SimpleNamespace(model=model, ema=holder, optimizer=optimizer), target


def test_removal_is_exact_and_the_optimizer_follows_the_new_parameters():
    trainer, target = zeroed_trainer()
    old, old_ema = trainer.model, trainer.ema.ema
    x = torch.rand(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, want_ema = old.eval()(x)[0], old_ema(x)[0]
    old.train()
    zeros = sum(int((m.weight == 0).sum()) for m in old.modules() if isinstance(m, nn.BatchNorm2d))
    assert zeros == target.chosen_count() > 0
    momentum = {n: trainer.optimizer.state[p]["momentum_buffer"].clone() for n, p in old.named_parameters()}
    info = remove_zeroed(trainer, "channels", 8, 8, IMGSZ)
    new, new_ema = trainer.model, trainer.ema.ema
    assert info["pruned"] and sum(bn_widths(old)) - sum(bn_widths(new)) == zeros  # exactly the zeroed ones
    assert bn_widths(new) == bn_widths(new_ema) and sum(bn_widths(new)) < sum(bn_widths(old))
    assert new.training and not new_ema.training and not any(p.requires_grad for p in new_ema.parameters())
    with torch.no_grad():
        got, got_ema = new.eval()(x)[0], new_ema(x)[0]
    for a, b in ((want, got), (want_ema, got_ema)):
        assert ((a - b).abs().max() / a.abs().max()).item() < 1e-5  # exact: gamma = beta = 0 outputs nothing
    params = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert {id(p) for p in params} == {id(p) for p in new.parameters()}
    assert [g["lr"] for g in trainer.optimizer.param_groups] == [0.02, 0.01]
    by_name = dict(old.named_parameters())
    for name, p in new.named_parameters():
        state = trainer.optimizer.state.get(p)
        if p.shape == by_name[name].shape:  # unchanged: momentum carried over
            assert state is not None and torch.equal(state["momentum_buffer"], momentum[name])
        else:  # sliced: its momentum is sliced as the parameter was (an Adam step count goes on too)
            kept = info["sliced"][name]
            assert torch.equal(state["momentum_buffer"], kept.of(momentum[name])), name
            assert state["momentum_buffer"].shape == p.shape
    new.train()
    for p in new.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in new.parameters()]
    trainer.optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, new.parameters()))
    # the EMA follows the new model from here on, with its update count carried over
    assert trainer.ema.updates == 6
    ema_before = [p.detach().clone() for p in trainer.ema.ema.parameters()]
    trainer.ema.update(new)
    assert sum(not torch.equal(a, b) for a, b in zip(ema_before, trainer.ema.ema.parameters())) > 0.9 * len(ema_before)


def test_prune_at_zero_needs_a_target():
    from ultra_prune.config.keys import validate

    with pytest.raises(UltraPruneError, match="add sparsity_target="):
        validate({"prune_at_zero": True})
    validate({"prune_at_zero": True, "sparsity_target": 0.5})


def test_one_run_ends_in_pruned_checkpoints(tmp_path, data_yaml, log, one_thread):
    from ultralytics import YOLO

    from ultra_prune.commands.prune import prune

    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(tmp_path, "one", epochs=4, sparsity_target=0.5,
                                                                   prune_at_zero=True))
    weights = tmp_path / "one" / "weights"
    full = n_params(YOLO("yolov8n.yaml").model)
    for name in ("last.pt", "best.pt"):
        model = torch.load(weights / name, map_location="cpu", weights_only=False)["model"]
        assert is_pruned(model) and getattr(model, MARKER)["history"][-1]["removed_in_run"], name
        assert n_params(model) < 0.6 * full, name
        assert not any(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    rows = (tmp_path / "one" / "results.csv").read_text().splitlines()
    header = [h.strip() for h in rows[0].split(",")]
    reached = [float(r.split(",")[header.index("sparsity/reached")]) for r in rows[1:]]
    assert len(reached) == 4 and reached[-1] >= 0.5
    assert any("removed the" in m and "training the pruned model on" in m for m in log)
    # the checkpoint trains on as itself, and the recorded prune knows there is nothing left to do
    assert prune(weights / "last.pt", verbose=False) == (None, None)
    assert any("already pruned" in m for m in log)
    YOLO(str(weights / "last.pt")).train(data=str(data_yaml), **train_kwargs(tmp_path, "ft"))
    ft = torch.load(tmp_path / "ft" / "weights" / "last.pt", map_location="cpu", weights_only=False)["model"]
    assert bn_widths(ft) == bn_widths(torch.load(weights / "last.pt", map_location="cpu", weights_only=False)["model"])

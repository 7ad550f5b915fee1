"""Sparse (BN-L1) training: exact gradient term under AMP, proximal step, statistics, and real training runs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import train_kwargs
from ultra_prune.train.parts import STALL_EPOCHS, ManualSparsity
from ultra_prune.slimming.sparsity import BNSparsity, gamma_stats
from ultra_prune.train.trainer import SlimDetectionTrainer

LAM = 0.05


def tiny_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.SiLU(), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.5, -0.3, 0.2, 0.0, 1.0, -1.0, 0.01, -0.02]))
    return net


def bare_trainer(net, scaler, mode="grad"):
    """A SlimDetectionTrainer holding just what optimizer_step touches."""
    t = SlimDetectionTrainer.__new__(SlimDetectionTrainer)
    t.model, t.scaler, t.ema, t.epoch, t.device = net, scaler, None, 0, torch.device("cpu")
    t.optimizer = torch.optim.SGD(net.parameters(), lr=0.0)  # lr 0: the step leaves weights, we read grads
    t.args = SimpleNamespace(sparsity_mode=mode)
    t.parts = [ManualSparsity(LAM, 0.0, 1.0, 1, mode)]
    return t


def grads_seen_by_optimizer(trainer, loss):
    """Backward through the trainer's scaler, run its optimizer_step, and return the BN gamma grad at step time."""
    seen = {}
    def capture(_opt, _args, _kwargs):
        seen["g"] = trainer.model[1].weight.grad.clone()

    trainer.optimizer.register_step_pre_hook(capture)
    trainer.scaler.scale(loss).backward()
    trainer.optimizer_step()
    return seen["g"]


def loss_of(net):
    torch.manual_seed(1)
    return net(torch.randn(2, 3, 8, 8)).pow(2).mean() * 1e-3  # small: clip_grad_norm_(10) must not kick in


def test_amp_gradient_is_exactly_g_plus_lambda_sign():
    ref = tiny_net()
    loss_of(ref).backward()
    gamma = ref[1].weight.detach()
    expected = ref[1].weight.grad + LAM * torch.sign(gamma)

    net = tiny_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True)
    got = grads_seen_by_optimizer(bare_trainer(net, scaler), loss_of(net))
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16  # no inf: the step ran with this scale
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)
    assert got[3] == expected[3]  # sign(0) = 0: a zero gamma gets no push


def test_naive_recipe_loses_the_term_under_amp():
    """Why the scale matters: adding lam*sign to still-scaled grads is divided away by unscale_()."""
    net = tiny_net()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True)
    t = bare_trainer(net, scaler)
    l1 = t.parts[0].l1
    l1.add_l1_grad = lambda model, epoch, scale=1.0: BNSparsity.add_l1_grad(l1, model, epoch, 1.0)
    got = grads_seen_by_optimizer(t, loss_of(net))
    ref = tiny_net()
    loss_of(ref).backward()
    assert (got - ref[1].weight.grad).abs().max() < LAM / 1000


def test_grad_mode_without_amp():
    net = tiny_net()
    got = grads_seen_by_optimizer(bare_trainer(net, torch.amp.GradScaler("cpu", enabled=False)), loss_of(net))
    ref = tiny_net()
    loss_of(ref).backward()
    torch.testing.assert_close(got, ref[1].weight.grad + LAM * torch.sign(ref[1].weight.detach()))


def test_soft_threshold_gives_exact_zeros():
    p = torch.tensor([0.5, -0.3, 0.05, -0.05, 0.0])
    BNSparsity(1.0).soft_threshold([p], 0.1)
    assert p.tolist() == pytest.approx([0.4, -0.2, 0.0, 0.0, 0.0])
    assert (p[2:] == 0).all()


def test_proximal_step_uses_group_lr_and_decay():
    net = tiny_net()
    gamma0 = net[1].weight.detach().clone()
    opt = torch.optim.SGD([{"params": [net[1].weight], "lr": 0.1}, {"params": [net[0].weight], "lr": 0.5}])
    sp = BNSparsity(0.2, decay=0.5, epochs=10)
    sp.bind(net)
    sp.proximal_step(opt, epoch=5)  # lam_e = 0.2 * (1 - 0.5 * 5/10) = 0.15; threshold = 0.1 * 0.15
    t = 0.1 * 0.15
    expected = torch.sign(gamma0) * (gamma0.abs() - t).clamp(min=0)
    torch.testing.assert_close(net[1].weight.detach(), expected)


def test_decay_schedule():
    sp = BNSparsity(1e-2, decay=0.1, epochs=100)
    assert sp.factor(0) == 1.0 and sp.factor(100) == pytest.approx(0.1) and sp.factor(50) == pytest.approx(0.55)


def test_gamma_stats():
    stats = gamma_stats(tiny_net())
    assert stats["sparsity/gamma<0.01"] == pytest.approx(1 / 8)  # only the exact 0
    assert stats["sparsity/gamma<0.001"] == pytest.approx(1 / 8)
    assert stats["sparsity/gamma_mean"] == pytest.approx(sum(abs(v) for v in [0.5, 0.3, 0.2, 0, 1, 1, 0.01, 0.02]) / 8)


def mean_gamma(ckpt) -> float:
    model = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    return gamma_stats(model.float())["sparsity/gamma_mean"]


# Short runs: SGD with no warm-up, one optimizer step per batch, so 3 steps already move gamma.
FAST = dict(optimizer="SGD", lr0=0.05, warmup_epochs=0, nbs=8, seed=0, deterministic=True)


def read_results(path) -> list[dict]:
    """Rows of a results.csv; older ultralytics (8.2.x at least) pads every header and value to 23 characters."""
    with open(path) as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def plain_gamma(tmp_path_factory, data_yaml) -> float:
    """The mean |gamma| after the same short run without sparsity (what each mode is compared to)."""
    from ultralytics import YOLO

    project = tmp_path_factory.mktemp("plain")
    YOLO("yolov8n.yaml").train(data=str(data_yaml), **train_kwargs(project, "plain", **FAST))
    return mean_gamma(project / "plain" / "weights" / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["polar", "prox", "grad"])
def test_sparse_training_shrinks_gamma(tmp_path, data_yaml, plain_gamma, mode):
    from ultralytics import YOLO

    plots = mode == "polar"  # (the histogram is drawn alike in every mode; ultralytics' plots cost seconds a run)
    YOLO("yolov8n.yaml").train(
        data=str(data_yaml), **train_kwargs(tmp_path, "sparse", sparsity=2.0, sparsity_mode=mode, plots=plots, **FAST)
    )
    plain, sparse = plain_gamma, mean_gamma(tmp_path / "sparse" / "weights" / "last.pt")
    # grad mode adds lambda*sign(gamma) before clip_grad_norm_(10), which scales the whole step down: one epoch
    # moves mean |gamma| by only 0.04-0.06 here (0.945 in isolation, 0.961 in the full 8.2.18 suite), prox/polar ~0.3
    assert sparse < plain - (0.02 if mode == "grad" else 0.05), (plain, sparse)
    rows = read_results(tmp_path / "sparse" / "results.csv")
    assert float(rows[-1]["sparsity/gamma_mean"]) == pytest.approx(sparse, rel=1e-2)  # the EMA that is saved
    assert "sparsity/gamma<0.01" in rows[0] and "sparsity/gamma<0.001" in rows[0]
    assert not plots or (tmp_path / "sparse" / "gamma_hist.png").stat().st_size > 10_000


@pytest.mark.slow
def test_sparse_training_through_the_yolo_cli(tmp_path, data_yaml):
    yolo = Path(sys.executable).parent / "yolo"
    args = [f"{k}={v}" for k, v in train_kwargs(tmp_path, "cli", sparsity=2.0, **FAST).items()]
    r = subprocess.run([str(yolo), "train", "model=yolov8n.yaml", f"data={data_yaml}", *args], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = read_results(tmp_path / "cli" / "results.csv")
    assert float(rows[-1]["sparsity/gamma_mean"]) < 0.95


def test_polarize_zeroes_below_mean_and_keeps_the_rest():
    p = torch.tensor([1.0, 0.9, 0.1, -0.05, 0.02])  # mean |p| = 0.414
    BNSparsity(1.0).polarize([p], 0.03)  # below the mean: shrink by 0.06
    torch.testing.assert_close(p, torch.tensor([1.0, 0.9, 0.04, 0.0, 0.0]))



@pytest.mark.parametrize("now_mean, now_frac, warns", [(0.99, 0.0, True), (0.6, 0.0, False), (0.99, 0.3, False)])
def test_stall_warning_once_with_the_fix(now_mean, now_frac, warns):
    import logging

    from ultralytics.utils import LOGGER

    # each record as ultralytics' own handler prints it (its formatter may add the level prefix), formatted on a
    # copy before that handler sees it (the newer formatter edits the record it formats)
    fmt = next((h.formatter for h in LOGGER.handlers if h.formatter), logging.Formatter("%(message)s"))
    records, shown = [], []
    catch = logging.Handler(logging.WARNING)
    catch.emit = lambda r: (records.append(r), shown.append(fmt.format(logging.makeLogRecord(r.__dict__))))
    LOGGER.handlers.insert(0, catch)
    try:
        part = ManualSparsity(1.0, 0.0, 0.1, 10, "polar")
        part.gamma.stats_first = {"sparsity/gamma<0.01": 0.0, "sparsity/gamma_mean": 1.0}
        now = {"sparsity/gamma<0.01": now_frac, "sparsity/gamma_mean": now_mean}
        part.warn_if_stalled(STALL_EPOCHS - 1, now)
        part.warn_if_stalled(STALL_EPOCHS - 1, now)
    finally:
        LOGGER.removeHandler(catch)
    assert len(records) == (1 if warns else 0)
    if warns:
        assert records[0].levelno == logging.WARNING
        assert "sparsity_mode=polar" in records[0].getMessage() and "sparsity=" in records[0].getMessage()
        assert shown[0].count("WARNING ⚠️") == 1, shown  # once, whether the formatter or the message adds it


@pytest.mark.parametrize("mode", ["prox", "polar"])
def test_proximal_step_skipped_with_the_amp_step(mode):
    """A fused optimizer is stepped by GradScaler even when it skips the step (inf gradients): gamma must not move."""
    net = tiny_net()
    t = bare_trainer(net, torch.amp.GradScaler("cpu", init_scale=2.0**16, enabled=True), mode)
    t.optimizer = torch.optim.AdamW(net.parameters(), lr=0.1, fused=True)
    t.parts[0].optimizer_built(t, t.optimizer, net)
    before = net[1].weight.detach().clone()
    loss = loss_of(net) * float("inf")
    t.scaler.scale(loss).backward()
    t.scaler.step(t.optimizer)
    t.scaler.update()
    assert t.scaler.get_scale() < 2.0**16  # the scaler saw the inf and skipped the step
    torch.testing.assert_close(net[1].weight.detach(), before, rtol=0, atol=0)

    net.zero_grad()
    t.scaler.scale(loss_of(net)).backward()  # a finite step does shrink
    t.scaler.step(t.optimizer)
    assert (net[1].weight.detach().abs() < before.abs()).any()

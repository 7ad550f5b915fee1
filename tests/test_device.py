"""The device rule, checked without a GPU: the pruner decides on CPU copies whatever device the model is on, moves an
index to the tensor it is applied to, keeps state device-free in checkpoints and on the model's device in a run, and
waits for the device nowhere in a training step. ``elsewhere`` stands in for the accelerator (CUDA's device rules on
CPU data); CUDA autocast's and NCCL's refusals are stood in for where they bite."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from elsewhere import DEVICE, OnDevice, elsewhere, put
from helpers import build
from torch import nn
from torch.overrides import TorchFunctionMode

from ultra_prune.train.architecture import prune_for_training, unwrap
from ultra_prune.config.settings import PruneConfig
from ultra_prune.slimming.distill import logit_distillation
from ultra_prune.train.parts import ManualSparsity, TargetSchedule
from ultra_prune.pruning import analyse, budget_for, prune_model
from ultra_prune.pruning.importance import LayerRelative, Magnitude, Taylor, TaylorScores, Zeroed
from ultra_prune.pruning.select import select
from ultra_prune.latency.runtimes import TorchRuntime, runtime_for
from ultra_prune.slimming.target import FREEZE, OBSERVE, ZERO, SparsityTarget

IMGSZ = 64


def on_device(yaml="yolov8n.yaml", seed=0):
    return put(build(yaml, seed))


def fake_grads(model, seed=1):
    """Gradients on every BatchNorm, on the model's device."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for p in (m.weight, m.bias):
                grad = torch.randn(p.shape, generator=g)
                p.grad = grad.as_subclass(OnDevice) if isinstance(p, OnDevice) else grad


def is_cpu(t: torch.Tensor) -> bool:
    return not isinstance(t, OnDevice) and t.device.type == "cpu"


def test_the_stand_in_refuses_what_cuda_refuses():
    with elsewhere():
        x = torch.ones(3, device=DEVICE)
        assert isinstance(x, OnDevice) and x.device == DEVICE and is_cpu(x.cpu())
        with pytest.raises(RuntimeError, match="same device"):
            x * torch.ones(3)
        with pytest.raises(RuntimeError, match="indices"):
            torch.ones(3)[torch.tensor([0, 1], device=DEVICE)]
        assert torch.equal(x[torch.tensor([0, 1])].cpu(), torch.ones(2))  # a CPU index may index the device
        assert (x * torch.tensor(2.0)).device == DEVICE  # a 0-d CPU tensor may join


def test_importances_and_select_answer_on_the_cpu():
    model = on_device()
    fake_grads(model)
    with elsewhere():
        scores = TaylorScores()
        scores.observe(model)
        assert all(isinstance(v, OnDevice) for v in scores.values())  # gathered where the gradients are
        spaces = analyse(model).roots()
        for importance in (Magnitude(), LayerRelative(), Zeroed(), Taylor(scores).bind(model)):
            assert all(is_cpu(importance(s)) for s in spaces if s.prunable), importance.name
        budget = budget_for("flops", 0.5, model, IMGSZ)
        keep = select(spaces, budget, Taylor(scores).bind(model))
        assert keep and all(is_cpu(k) for k in keep.values())


def test_the_target_chooses_on_the_cpu_and_scales_on_the_device():
    model = on_device()
    cpu = build("yolov8n.yaml")
    fake_grads(model)
    fake_grads(cpu)
    want = SparsityTarget(0.5, "flops", imgsz=IMGSZ)
    want.observe(cpu)
    want.choose(cpu)
    with elsewhere():
        target = SparsityTarget(0.5, "flops", imgsz=IMGSZ)
        target.observe(model)
        target.choose(model)
        assert target.chosen and all(is_cpu(ix) for ix in target.chosen.values())
        assert target.chosen.keys() == want.chosen.keys()
        assert all(torch.equal(target.chosen[k], want.chosen[k]) for k in want.chosen)
        target.step([model], ZERO)
        assert target.zeroed() and target.reached(model) >= 0.5
    want.step([cpu], ZERO)
    for (n, a), b in zip(model.state_dict().items(), cpu.state_dict().values()):
        assert torch.equal(a.as_subclass(torch.Tensor), b), n


def test_surgery_keeps_every_tensor_on_its_module_device():
    model = on_device("yolov8n-cls.yaml")  # the classifier's Linear and a conv given a bias by the fold
    with elsewhere():
        pruned, info = prune_model(model, 0.5, prune_by="flops", imgsz=IMGSZ)
        assert info["pruned"]
        assert all(isinstance(t, OnDevice) for t in pruned.state_dict().values() if t.is_floating_point())
    want, _ = prune_model(build("yolov8n-cls.yaml"), 0.5, prune_by="flops", imgsz=IMGSZ)
    for (n, a), b in zip(pruned.state_dict().items(), want.state_dict().values()):
        assert torch.equal(a.as_subclass(torch.Tensor), b), n


def test_a_folded_constant_gets_a_bias_on_the_weights_device():
    from ultra_prune.pruning.surgery import compensate

    model = on_device()
    head = model.model[-1].cv2[0][-1]
    head.bias = None  # a consumer without BatchNorm or bias: the fold has to make one
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data[: m.num_features // 2] = 0
    with elsewhere():
        budget = budget_for("channels", 0.0, model, IMGSZ)
        keep = select(analyse(model).roots(), budget, Zeroed(), take_dead=True)
        compensate(keep)
        assert head.bias is not None and head.bias.device == head.weight.device == DEVICE


def test_sliced_weights_keep_channels_last():
    model = build("yolov8n.yaml").to(memory_format=torch.channels_last)
    pruned, info = prune_model(model, 0.5, prune_by="flops", imgsz=IMGSZ)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert info["pruned"] and convs
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)


def test_distillation_never_calls_what_cuda_autocast_refuses(monkeypatch):
    def refused(*args, **kwargs):
        raise RuntimeError("torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast")

    monkeypatch.setattr(F, "binary_cross_entropy", refused)
    g = torch.Generator().manual_seed(0)
    teacher = [torch.randn(2, 64 + 3, 8, 8, generator=g)]
    student = [torch.randn(2, 64 + 3, 8, 8, generator=g)]
    loss = logit_distillation(student, teacher, 16, 3)
    assert torch.isfinite(loss) and loss > 0
    assert logit_distillation(teacher, teacher, 16, 3).abs() < 1e-5  # 0 when the two agree


@pytest.fixture
def one_rank(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def test_one_shot_prune_broadcasts_on_the_training_device(one_rank, monkeypatch):
    """NCCL takes only tensors on the rank's GPU; the model is still on the CPU when ultralytics builds it."""
    broadcast, sent = torch.distributed.broadcast, []

    def nccl(tensor, src, *args, **kwargs):
        if tensor.device != DEVICE:
            raise RuntimeError(f"Tensors must be CUDA and dense (got a tensor on {tensor.device})")
        sent.append(tensor)
        return broadcast(tensor.as_subclass(torch.Tensor), src, *args, **kwargs)

    monkeypatch.setattr(torch.distributed, "broadcast", nccl)
    model = build("yolov8n.yaml")
    cfg = PruneConfig(0.3, "channels", "l1", round_to=8, imgsz=IMGSZ)
    with elsewhere():
        pruned, report = prune_for_training(model, cfg, None, DEVICE, verbose=False)
    assert report is not None and len(sent) == len(model.state_dict())
    assert all(is_cpu(t) for t in pruned.state_dict().values())  # the model stays where ultralytics put it


def test_a_resumed_target_run_gathers_scores_on_the_model_device():
    model = on_device()
    fake_grads(model)
    part = TargetSchedule(PruneConfig(0.5, "flops", round_to=8, imgsz=IMGSZ))
    with elsewhere():
        part.target.observe(model)
        state = part.state()  # what a checkpoint holds: device-free
        assert all(is_cpu(v) for v in state["taylor"].values())
        resumed = TargetSchedule(PruneConfig(0.5, "flops", round_to=8, imgsz=IMGSZ))
        resumed.resume(SimpleNamespace(model=model), state)
        assert all(v.device == DEVICE for v in resumed.target.taylor.values())
        resumed.target.observe(model)  # adds the next step's scores where they are


@pytest.mark.parametrize("device", [0, "0", "cuda:0"])
def test_torch_latency_runtime_selects_the_device_as_ultralytics_does(device, mocker):
    select = mocker.patch("ultralytics.utils.torch_utils.select_device", return_value=torch.device("cuda", 0))
    assert runtime_for("torch", device).device == torch.device("cuda", 0)
    select.assert_called_once_with(str(device), verbose=False)


def test_torch_latency_runtime_waits_for_its_own_device(mocker):
    synced = mocker.patch("torch.cuda.synchronize")
    runtime = TorchRuntime(torch.device("cuda", 1))  # a torch.device (the trainer's) passes through unchanged
    assert runtime.device == torch.device("cuda", 1)
    with elsewhere():
        runtime.device = DEVICE  # the stand-in can only be cuda:0
        runtime._run(nn.Identity(), (1, 3, 8, 8))()
    synced.assert_called_once_with(DEVICE)


def test_unwrap_sees_through_nested_wrappers():
    model = nn.Conv2d(3, 4, 1)
    assert unwrap(nn.DataParallel(torch.compile(model))) is model
    assert unwrap(torch.compile(nn.DataParallel(model))) is model
    assert unwrap(model) is model


class Syncs(TorchFunctionMode):
    """Counts the calls that make the host wait for the device."""

    WAITS = {torch.Tensor.item, torch.Tensor.cpu, torch.Tensor.__bool__, torch.Tensor.tolist, torch.Tensor.numpy,
             torch.Tensor.__float__, torch.Tensor.__int__}

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.WAITS:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


def stand_in_trainer(model, ema, epochs=10, batches=10):
    return SimpleNamespace(model=model, ema=SimpleNamespace(ema=ema), epoch=0, epochs=epochs,
                           train_loader=range(batches), args=SimpleNamespace())


def test_sparse_training_steps_never_wait_for_the_device():
    from ultra_prune.train.trainer import loss_scale

    model, ema = build("yolov8n.yaml"), build("yolov8n.yaml")
    fake_grads(model)
    scale = torch.tensor(2.0**16)  # the AMP loss scale, a tensor on the device
    target = TargetSchedule(PruneConfig(0.5, "flops", round_to=8, imgsz=IMGSZ))
    trainer = stand_in_trainer(model, ema)
    target.before_step(trainer, scale)  # gathering scores (p < OBSERVE)
    trainer.epoch = int(OBSERVE * trainer.epochs)
    target.epoch_start(trainer)  # the choice: once an epoch, not a step
    assert target.target.chosen
    steps = []
    for p in (OBSERVE, (FREEZE + ZERO) / 2, ZERO + 0.05):  # still scoring; shrinking; held at zero
        trainer.epoch = int(p * trainer.epochs)
        steps.append(lambda: (target.before_step(trainer, scale), target.after_step(trainer)))
    manual = ManualSparsity(1e-3, 1e-3, 0.1, 10, "grad")
    polar = ManualSparsity(1e-3, 1e-3, 0.1, 10, "polar")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    polar.optimizer_built(trainer, optimizer, model)
    optimizer.found_inf = torch.tensor(0.0)  # a fused optimizer under AMP: stepped with the device flag
    steps += [lambda: manual.before_step(trainer, scale), lambda: polar.proximal(optimizer, 0),
              lambda: loss_scale(SimpleNamespace(is_enabled=lambda: True, _scale=scale))]
    with Syncs() as syncs:
        for step in steps:
            step()
    assert syncs.seen == []


def test_an_overflowed_amp_step_changes_nothing_in_the_proximal_step():
    model = build("yolov8n.yaml")
    part = ManualSparsity(1.0, 1.0, 0.1, 10, "prox")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    part.optimizer_built(None, optimizer, model)
    before = [p.clone() for p in model.parameters()]
    optimizer.found_inf = torch.tensor(1.0)
    part.proximal(optimizer, 0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    optimizer.found_inf = torch.tensor(0.0)
    part.proximal(optimizer, 0)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))

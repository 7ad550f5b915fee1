"""Logit distillation (``distill_model=``): the loss, the criterion that never carries its teacher along, and real
fine-tuning runs with resume."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from conftest import train_kwargs
from ultra_prune.slimming.distill import DistillCriterion, head_outputs, logit_distillation
from ultra_prune.errors import UltraPruneError

NC, REG = 4, 16


def raw_levels(seed, b=2):
    """Per-level raw head maps as ultralytics <= 8.3 returns them in training."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 4 * REG + NC, s, s, generator=g) for s in (8, 4, 2)]


def as_dict(levels):
    """The same outputs the way 8.4 returns them."""
    x = torch.cat([p.flatten(2) for p in levels], 2)
    return {"boxes": x[:, : 4 * REG], "scores": x[:, 4 * REG :], "feats": levels}


def test_head_outputs_agree_across_ultralytics_output_forms():
    levels = raw_levels(0)
    for form in (levels, as_dict(levels), (None, levels), (None, {"one2many": as_dict(levels)})):
        boxes, scores = head_outputs(form, REG, NC)
        assert boxes.shape == (2, 4 * REG, 84) and scores.shape == (2, NC, 84)
        torch.testing.assert_close(scores, as_dict(levels)["scores"])


def test_logit_distillation_is_zero_at_agreement_and_pulls_the_student_only():
    teacher = raw_levels(0)
    assert logit_distillation(teacher, teacher, REG, NC).abs().item() < 1e-5
    student = [t.clone().requires_grad_(True) for t in raw_levels(1)]
    loss = logit_distillation(student, teacher, REG, NC)
    assert loss.item() > 0.1
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    with torch.no_grad():  # a small step along the gradient lowers it
        stepped = [s - 0.1 * s.grad for s in student]
    assert logit_distillation(stepped, teacher, REG, NC).item() < loss.item()


def test_criterion_adds_the_term_and_never_copies_its_teacher():
    calls = []

    def base(preds, batch):
        calls.append(1)
        return torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3)

    class Teacher(nn.Module):
        def forward(self, x):
            return raw_levels(0, b=len(x))

    teacher = Teacher()
    crit = DistillCriterion(base, teacher, REG, NC)
    base.hyp = "hyp"  # attributes of the wrapped criterion stay reachable
    preds, batch = raw_levels(1), {"img": torch.zeros(2, 3, 16, 16)}
    loss, _ = crit(preds, batch)
    expected = logit_distillation(preds, raw_levels(0), REG, NC) * 2  # x batch size, as ultralytics' losses
    torch.testing.assert_close(loss, torch.tensor([1.0, 2.0, 3.0]) + expected)
    assert crit.hyp == "hyp" and calls == [1]
    for clone in (copy.deepcopy(crit), pickle.loads(pickle.dumps(DistillCriterion(sum, teacher, REG, NC)))):
        assert clone.teacher is None
    assert crit.teacher is teacher


@pytest.mark.slow
def test_distilled_fine_tuning_resumes_and_saves_only_the_student(tmp_path, one_shot, data_yaml, sparse_ckpt):
    from ultralytics import YOLO

    pruned_pt = one_shot / "weights" / "pruned.pt"
    pruned = sum(p.numel() for p in YOLO(str(pruned_pt)).model.parameters())
    seen = []

    def stop_after_first_epoch(trainer):
        crit = getattr(trainer.model, "criterion", None)
        seen.append((type(crit).__name__, crit.last if crit is not None else None))
        raise KeyboardInterrupt("simulated interruption")

    model = YOLO(str(pruned_pt))
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        model.train(data=str(data_yaml), **train_kwargs(tmp_path, "kd", epochs=2, distill_model=str(sparse_ckpt)))
    assert seen[0][0] == "DistillCriterion" and seen[0][1] > 0
    last = tmp_path / "kd" / "weights" / "last.pt"
    ck = torch.load(last, map_location="cpu", weights_only=False)
    assert sum(p.numel() for p in ck["ema"].parameters()) == pruned
    assert not isinstance(getattr(ck["ema"], "criterion", None), DistillCriterion)
    assert ck["train_args"]["distill_model"] == str(sparse_ckpt)

    YOLO(str(last)).train(resume=True)  # the teacher comes back from the recorded path
    ck = torch.load(last, map_location="cpu", weights_only=False)
    assert ck["epoch"] == -1 and sum(p.numel() for p in ck["model"].parameters()) == pruned
    assert not any(isinstance(getattr(m, "criterion", None), DistillCriterion) for m in ck["model"].modules())


def test_teacher_with_another_head_is_refused(tmp_path, data_yaml, sparse_ckpt):
    from ultralytics import YOLO

    from ultralytics.nn.tasks import DetectionModel

    from ultra_prune.io.checkpoint import save_model

    other = save_model(DetectionModel("yolov8n.yaml", nc=2, verbose=False), tmp_path / "other.pt")  # 2 classes, not 4
    with pytest.raises(UltraPruneError, match="different head"):
        YOLO(str(sparse_ckpt)).train(data=str(data_yaml), **train_kwargs(tmp_path, "bad", distill_model=str(other),
                                                                       distill_loss="logit"))


def test_bad_distill_loss_is_refused():
    from ultra_prune.config.keys import validate

    with pytest.raises(UltraPruneError, match="distill_loss"):
        validate({"distill_loss": "soft"})

"""Logit distillation for fine-tuning a slimmed detector from its teacher (``distill_model=teacher.pt``).

A pruned student has exactly its teacher's head outputs, so it learns from them directly:

- class scores: the binary KL divergence from the teacher's probabilities (BCE against ``sigmoid(teacher)``,
  less the teacher's entropy, so it is 0 when the two agree), both from logits: CUDA's autocast, which the loss runs
  inside, refuses ``binary_cross_entropy`` on probabilities;
- box edges: the KL divergence between the teacher's and the student's DFL distributions of each edge
  (Localization Distillation, Zheng et al., 2022), weighted by the teacher's confidence at each anchor.

Knows torch (and how each ultralytics release gives the head outputs: ``versions.head_outputs``); the trainer glue lives in ``ultra_prune.train.trainer``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ultra_prune.patches.versions import head_outputs

# relative to the detection loss; benchmarks/README.md: +0.9 to +1.3 pt in bench_vs_torch_pruning.py, and 3 scored
# 0.35 pt under 1 (bench_recipes.py --distill-weight 3, -70 %, four seeds)
WEIGHT = 1.0


def logit_distillation(student, teacher, reg_max: int, nc: int) -> torch.Tensor:
    """The class-score plus box-distribution distillation loss of ``student`` toward ``teacher`` (raw outputs)."""
    sb, sc = (t.float() for t in head_outputs(student, reg_max, nc))
    tb, tc = (t.float().detach() for t in head_outputs(teacher, reg_max, nc))
    tp = tc.sigmoid()
    entropy = F.binary_cross_entropy_with_logits(tc, tp, reduction="none")
    cls = (F.binary_cross_entropy_with_logits(sc, tp, reduction="none") - entropy).sum() / tp.sum().clamp_min(1.0)
    if reg_max <= 1:
        return cls
    b, _, a = sb.shape
    s_log = F.log_softmax(sb.view(b, 4, reg_max, a), 2)
    t_prob = F.softmax(tb.view(b, 4, reg_max, a), 2)
    kl = (t_prob * (t_prob.clamp_min(1e-12).log() - s_log)).sum(2).mean(1)  # [B, A]
    weight = tp.amax(1)  # the teacher's confidence at each anchor
    return cls + (kl * weight).sum() / weight.sum().clamp_min(1e-6)


class DistillCriterion:
    """Wraps a detection criterion: its loss plus ``WEIGHT`` x the logit distillation from ``teacher``.

    The teacher is never copied or pickled with it (a deep copy or a checkpoint holds the plain criterion's state
    and no teacher), so it never enters a saved model or the EMA.
    """

    def __init__(self, criterion, teacher: nn.Module, reg_max: int, nc: int, weight: float | None = None):
        self.criterion, self.teacher, self.reg_max, self.nc = criterion, teacher, reg_max, nc
        self.weight = WEIGHT if weight is None else weight
        self.last = 0.0  # the last batch's distillation loss, for logging (a device tensor: read it off the step)

    def __call__(self, preds, batch):
        loss, items = self.criterion(preds, batch)
        if self.teacher is None:
            return loss, items
        with torch.no_grad():
            teacher_preds = self.teacher(batch["img"])
        kd = logit_distillation(preds, teacher_preds, self.reg_max, self.nc) * self.weight
        self.last = kd.detach()
        return loss + kd * len(batch["img"]), items

    def __getattr__(self, name):  # the wrapped criterion's attributes (hyp, stride, ...) for code that reads them
        if name == "criterion":
            raise AttributeError(name)
        return getattr(self.criterion, name)

    def __getstate__(self):
        return {**self.__dict__, "teacher": None}

    def __setstate__(self, state):
        self.__dict__.update(state)


def load_teacher(path, student: nn.Module) -> nn.Module:
    """The frozen teacher of ``path`` on ``student``'s device, after checking that their heads match."""
    from ultra_prune.io.checkpoint import load_model
    from ultra_prune.errors import UltraPruneError

    teacher = load_model(path)[0]
    hs, ht = student.model[-1], teacher.model[-1]
    key = lambda h: (h.nc, getattr(h, "reg_max", 16), tuple(float(s) for s in h.stride))  # noqa: E731
    if key(hs) != key(ht):
        raise UltraPruneError(
            f"distill_model '{path}' has a different head (nc, reg_max, strides {key(ht)}) than the model being "
            f"trained {key(hs)}; distil from the model it was pruned from, or another model of the same data"
        )
    teacher = teacher.to(next(student.parameters()).device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher

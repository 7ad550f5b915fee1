"""Channel importances for pruning a model that is not sparse (``prune_importance=``): Taylor scores from data.

No training: models from yaml with randomised BatchNorms, the small generated datasets of ``ultra_prune.commands.dataset``.
"""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from conftest import IMGSZ
from test_pruning import build
from ultra_prune.commands.prune import prune
from ultra_prune.engine.calibrate import taylor_scores
from ultra_prune.io.checkpoint import load_model, save_model
from ultra_prune.errors import UltraPruneError
from ultra_prune.pruning import MARKER, analyse, prune_model
from ultra_prune.pruning.importance import Magnitude, Taylor, TaylorScores


@functools.lru_cache(maxsize=None)
def model():
    return build("yolov8n.yaml")


@pytest.fixture(scope="module")
def scores(data_yaml) -> TaylorScores:
    return taylor_scores(model(), data_yaml, imgsz=IMGSZ, batch=8, batches=2)


def state(m: nn.Module) -> dict:
    return {k: v.clone() for k, v in m.state_dict().items()} | {"grad": [p.requires_grad for p in m.parameters()]}


def test_taylor_scores_cover_every_batchnorm_and_leave_the_model_alone(data_yaml, scores):
    m = model()
    before = state(m)
    again = taylor_scores(m, data_yaml, imgsz=IMGSZ, batch=8, batches=2)
    bns = {n: b for n, b in m.named_modules() if isinstance(b, nn.BatchNorm2d)}
    assert set(scores) == set(bns)
    assert all(s.shape == (bns[n].num_features,) and (s >= 0).all() for n, s in scores.items())
    assert sum(float(s.sum()) for s in scores.values()) > 0
    for n in scores:  # one fixed sample of the data: every DDP rank scores (and prunes) alike
        torch.testing.assert_close(scores[n], again[n])
    after = state(m)
    assert after["grad"] == before["grad"]
    assert all(torch.equal(before[k], after[k]) for k in before if k != "grad")  # running stats included


def test_taylor_ranking_removes_the_lowest_scored_channels(scores):
    """In a space with a single BatchNorm, the channels a Taylor-ranked prune keeps score at least as high as every
    channel it removes there (across layers the ranking is global); with |gamma| ranking the kept counts differ."""
    m = model()
    pruned, _ = prune_model(m, 0.3, 1, 1, importance=Taylor(scores))
    l1, _ = prune_model(m, 0.3, 1, 1, importance=Magnitude())
    names = {mod: n for n, mod in m.named_modules()}
    spaces = [s for s in analyse(m).roots() if s.prunable and len(s.producers) == 1 and not s.depthwise
              and s.producers[0][1] == 0 and s.size == s.producers[0][0].bn.num_features]
    p_bns, l1_bns = dict(pruned.named_modules()), dict(l1.named_modules())
    checked = differs = 0
    for s in spaces:
        name = names[s.producers[0][0].bn]
        kept = p_bns[name].num_features
        if kept == s.size:
            continue
        original = m.get_submodule(name).weight.detach()
        got = {int(torch.argmin((original - w).abs())) for w in p_bns[name].weight.detach()}  # gammas are distinct
        removed = [i for i in range(s.size) if i not in got]
        assert len(got) == kept and scores[name][sorted(got)].min() >= scores[name][removed].max(), name
        checked += 1
        differs += l1_bns[name].num_features != kept
    assert checked >= 3 and differs >= 1


def test_prune_importance_default_uses_data_when_given(tmp_path, data_yaml):
    path = save_model(model(), tmp_path / "m.pt")
    _, with_data = prune(path, prune=0.3, data=str(data_yaml), imgsz=IMGSZ, verbose=False)
    _, without = prune(path, prune=0.3, imgsz=IMGSZ, verbose=False, prune_out=tmp_path / "b.pt")
    assert with_data.prune_importance == "taylor" and without.prune_importance == "l1"
    assert "prune_importance=taylor" in with_data.text() and with_data.accuracy is not None
    history = getattr(load_model(tmp_path / "m_pruned.pt")[0], MARKER)["history"]
    assert history[-1]["prune_importance"] == "taylor"


def test_taylor_without_data_is_refused(tmp_path):
    path = save_model(model(), tmp_path / "m.pt")
    with pytest.raises(UltraPruneError, match=r"prune_importance=taylor scores channels on training data, and no "
                                              r"data= was given; add data=.* or use prune_importance=l1"):
        prune(path, prune=0.3, prune_importance="taylor", imgsz=IMGSZ, verbose=False)
    assert not (tmp_path / "m_pruned.pt").exists()


def test_bad_importance_is_refused(tmp_path):
    with pytest.raises(UltraPruneError, match=r"'prune_importance=gradient' is not one of"):
        prune(save_model(model(), tmp_path / "m.pt"), prune=0.3, prune_importance="gradient")

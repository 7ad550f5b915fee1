"""The end-to-end smoke (tests/smoke_pipeline.py) under pytest, reusing the session's sparse checkpoint."""

import pytest

import smoke_pipeline as smoke

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, data_yaml, sparse_ckpt):
    project = tmp_path_factory.mktemp("smoke")
    return project, smoke.prune_finetune(sparse_ckpt, data_yaml, project)


def test_prune_finetune_keeps_pruned_size(pruned_run):
    _, info = pruned_run
    counts = info["params"]
    assert counts["best"] == counts["pruned"] < counts["sparse"]


def test_plain_yolo_validates_and_predicts(pruned_run, data_yaml):
    project, info = pruned_run
    out = smoke.use_plain(info["best"], data_yaml, project)
    assert out["predicted"] == 2


def test_checkpoint_loads_without_plugin(pruned_run, data_yaml):
    _, info = pruned_run
    assert smoke.use_without_plugin(info["best"], data_yaml)["params_without_plugin"] == info["params"]["best"]

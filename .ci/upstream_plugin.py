"""pytest plugin for ``upstream_suite.py``: loaded with ``-p upstream_plugin`` into both runs of ultralytics' tests.

* checks at session start that the plugin state is the expected one (``ultralytics._ultra_prune_patched`` set in the
  "on" run, absent in the "off" run) and writes what it saw to ``$UPSTREAM_SUITE_STATE``; a mismatch ends the run;
* deselects DESELECT, identically in both runs, so the runs compare by test id;
* puts the settings file back after every test: test_cli.py::test_special_modes runs ``yolo settings reset``, which
  would point the later ``yolo`` subprocesses at runs/ and weights/ in the git checkout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# Test ids left out of both runs, with the reason: an id, or a prefix ending in "*". Everything else in
# upstream_suite.FILES runs. Parametrized ids name the task first (test_train[classify-model0-imagenet10]).
NETWORK = "network: no offline stand-in for its download"
RANDOM = "needs trained weights: the random-init stand-ins find nothing in bus.jpg"
BUDGET = "time budget"  # CI: 2 CPU cores, ~6 min for both runs
DESELECT = {
    "tests/test_cli.py::test_solutions*": NETWORK + " (solution videos)",
    "tests/test_cli.py::test_fastsam": NETWORK + " (FastSAM-s.pt, CLIP)",
    "tests/test_cli.py::test_mobilesam": NETWORK + " (mobile_sam.pt)",
    "tests/test_cli.py::test_rtdetr": NETWORK + " (rtdetr-l.pt; RT-DETR-l training is also too slow on 2 cores)",
    "tests/test_python.py::test_yoloe*": NETWORK + " (YOLOE checkpoints, MobileCLIP)",
    "tests/test_python.py::test_data_annotator": NETWORK + " (mobile_sam.pt)",
    "tests/test_python.py::test_all_model_yamls": NETWORK + " (a yaml's torchvision backbone fetches its weights)",
    "tests/test_python.py::test_multichannel*": NETWORK + " (coco8-multispectral is not generated)",
    "tests/test_python.py::test_ndjson_conversion_concurrency_and_resume*": NETWORK + " (and aiohttp)",
    "tests/test_python.py::test_track_*": "needs lap, which ultralytics pip-installs on first use (offline here)",
    "tests/test_python.py::test_tracktrack_new_lifecycle": "needs lap, which ultralytics pip-installs on first use",
    "tests/test_python.py::test_predict_classes_with_max_det*": RANDOM,
    "tests/test_python.py::test_results[yolo26n.pt]": RANDOM,
    "tests/test_python.py::test_results[yolo26n-seg.pt]": RANDOM,
    "tests/test_python.py::test_results[yolo26n-pose.pt]": RANDOM,
    "tests/test_python.py::test_results[yolo26n-obb.pt]": RANDOM,
    "tests/test_python.py::test_results[yolo11n-grayscale.pt]": RANDOM,
    "tests/test_python.py::test_labels_and_crops": RANDOM,
    "tests/test_python.py::test_val_save_txt_pose": RANDOM + " (no keypoints above conf=0.25)",
    # Time budget. Kept: training through `yolo train` (test_distill: detect/segment/pose/obb, test_train[classify]),
    # through Model.train with resume for every task (test_engine.py::test_resume_incomplete), Model.val and
    # Model.predict for every task (test_python.py::test_val, test_predict_img), Model.export to ONNX and prediction
    # with the export (test_grayscale[detect]), the CLI special modes and the start-up imports.
    "tests/test_cli.py::test_train[depth-*": BUDGET + "; depth trains in test_resume_incomplete",
    "tests/test_cli.py::test_train[detect-*": BUDGET + "; `yolo train detect` runs in test_distill",
    "tests/test_cli.py::test_train[obb-*": BUDGET + "; `yolo train obb` runs in test_distill",
    "tests/test_cli.py::test_train[pose-*": BUDGET + "; `yolo train pose` runs in test_distill",
    "tests/test_cli.py::test_train[segment-*": BUDGET + "; `yolo train segment` runs in test_distill",
    "tests/test_cli.py::test_train[semantic-*": BUDGET + "; semantic trains in test_resume_incomplete",
    "tests/test_cli.py::test_val*": BUDGET + "; Model.val of every task runs in test_python.py::test_val",
    "tests/test_cli.py::test_predict*": BUDGET + "; Model.predict of each task: test_python.py::test_predict_img",
    "tests/test_cli.py::test_export*": BUDGET + "; Model.export runs in test_python.py::test_grayscale[detect]",
    "tests/test_engine.py::test_task*": BUDGET + "; the stock trainer classes by hand; every task trains through "
                                         "Model.train in test_resume_incomplete",
    "tests/test_engine.py::test_export": BUDGET + "; the Exporter class by hand (Model.export runs elsewhere)",
    "tests/test_engine.py::test_nan_recovery": BUDGET + "; a 3-epoch stock DetectionTrainer run",
    "tests/test_engine.py::test_checkpoint_*": BUDGET + "; stock DetectionTrainer checkpointing internals",
    "tests/test_python.py::test_grayscale[obb-*": BUDGET + "; only test_grayscale[detect] is kept",
    "tests/test_python.py::test_grayscale[pose-*": BUDGET + "; only test_grayscale[detect] is kept",
    "tests/test_python.py::test_grayscale[segment-*": BUDGET + "; only test_grayscale[detect] is kept",
    "tests/test_python.py::test_grayscale[semantic-*": BUDGET + "; only test_grayscale[detect] is kept",
    "tests/test_python.py::test_train_pretrained*": BUDGET + "; Model.train from a .pt runs in test_resume_incomplete",
    "tests/test_python.py::test_workflow": BUDGET + "; train/val/predict/export run in test_grayscale[detect]",
    "tests/test_python.py::test_yolov10": BUDGET,
    "tests/test_python.py::test_semantic_polygon_data": BUDGET,
    "tests/test_python.py::test_val_save_json_semantic": BUDGET,
    "tests/test_python.py::test_utils_benchmarks": BUDGET + "; benchmarks every export format",
    "tests/test_python.py::test_restricted_load_threaded": BUDGET,
}


def deselected(nodeid: str) -> str | None:
    """The reason ``nodeid`` is left out, or None."""
    return next((why for p, why in DESELECT.items() if (nodeid.startswith(p[:-1]) if p.endswith("*") else nodeid == p)),
                None)


_state: dict = {}


def pytest_sessionstart(session):
    import ultralytics
    from ultralytics.utils import SETTINGS_FILE

    want = os.environ["UPSTREAM_SUITE_PLUGIN"]  # "on" or "off"
    patched = bool(getattr(ultralytics, "_ultra_prune_patched", False))
    _state.update(settings_file=str(SETTINGS_FILE), settings=Path(SETTINGS_FILE).read_bytes())
    Path(os.environ["UPSTREAM_SUITE_STATE"]).write_text(json.dumps(
        {"want": want, "patched": patched, "ultralytics": ultralytics.__version__, "file": ultralytics.__file__}))
    if patched != (want == "on"):
        import pytest

        pytest.exit(f"ultra-prune plugin expected {want} but ultralytics._ultra_prune_patched={patched}", returncode=4)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        (drop if deselected(item.nodeid) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_teardown(item, nextitem):
    file = Path(_state["settings_file"])
    if not file.exists() or file.read_bytes() != _state["settings"]:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(_state["settings"])

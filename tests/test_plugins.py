"""Activation: plugin discovery, idempotent patches, the start-up hook, and the install layout."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


from ultra_prune.plugins import BUILTINS, get_plugin_manager

PYTHON = sys.executable


def with_path(folder) -> str:
    """PYTHONPATH with ``folder`` first, keeping what is there (CI shadows in an old ultralytics through it)."""
    return os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)


def run_py(code, cwd, env=None, check=True):
    """Run ``code`` in a fresh interpreter; return the completed process."""
    full_env = {**os.environ, **(env or {})}
    r = subprocess.run([PYTHON, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, capture_output=True, text=True,
                       timeout=300)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_builtin_plugins_come_from_the_entry_point_group():
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="ultra_prune")}
    assert names == set(BUILTINS)
    pm = get_plugin_manager()
    assert all(pm.has_plugin(n) for n in BUILTINS)


def test_patches_are_idempotent():
    import ultralytics
    from ultralytics import cfg
    from ultralytics.engine.model import Model

    from ultra_prune.patches import apply

    train, modes, entry, help_msg = Model.train, tuple(cfg.MODES), cfg.entrypoint, cfg.CLI_HELP_MSG
    ultralytics._ultra_prune_patched = False  # force a second full application
    apply()
    assert Model.train is train and tuple(cfg.MODES) == modes and list(cfg.MODES).count("prune") == 1
    assert cfg.entrypoint is entry and not getattr(entry.__wrapped__, "_ultra_prune", False)
    assert cfg.CLI_HELP_MSG == help_msg and help_msg.count("yolo prune model=") == 1
    assert ultralytics.utils.DEFAULT_CFG_DICT["sparsity"] == 0.0 and ultralytics.utils.DEFAULT_CFG.prune_round == "auto"


def test_trainer_is_chosen_per_task():
    from ultralytics.models import yolo

    from ultra_prune.train.trainer import SlimClassificationTrainer, SlimDetectionTrainer, SlimTrainer

    hook = get_plugin_manager().hook.ultra_prune_trainer
    assert hook(task="detect") is SlimDetectionTrainer
    assert hook(task="classify") is SlimClassificationTrainer
    assert issubclass(SlimClassificationTrainer, yolo.classify.ClassificationTrainer)
    for task in ("segment", "pose") + (("obb",) if hasattr(yolo, "obb") else ()):
        assert issubclass(hook(task=task), SlimTrainer) and hook(task=task).__module__ == "ultra_prune.train.trainer"
    assert hook(task="semantic") is None and hook(task="depth") is None


def test_startup_hook_patches_plain_ultralytics_without_importing_torch(tmp_path):
    r = run_py("""
        import sys
        before = 'torch' in sys.modules or 'ultralytics' in sys.modules
        import ultralytics
        from ultralytics.utils import DEFAULT_CFG_DICT
        print(before, 'ultra_prune' in sys.modules, ultralytics._ultra_prune_patched, DEFAULT_CFG_DICT['sparsity'])
    """, tmp_path)
    assert r.stdout.split() == ["False", "True", "True", "0.0"]


def test_startup_hook_can_be_disabled(tmp_path):
    r = run_py("""
        import sys, ultralytics
        print('ultra_prune' in sys.modules, getattr(ultralytics, '_ultra_prune_patched', False))
    """, tmp_path, env={"ULTRA_PRUNE_DISABLE": "1"})
    assert r.stdout.split() == ["False", "False"]


def test_broken_plugin_never_breaks_startup(tmp_path):
    """A failing activation is one warning line; ultralytics still imports."""
    fake = tmp_path / "ultra_prune"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('boom')\n")
    r = run_py("import ultralytics; print('imported')", tmp_path, env={"PYTHONPATH": with_path(tmp_path)})
    assert r.stdout.strip() == "imported"
    warnings = [line for line in r.stderr.splitlines() if "ultra-prune" in line]
    assert len(warnings) == 1 and "RuntimeError: boom" in warnings[0]


def test_no_top_level_patches_module(tmp_path):
    r = run_py("""
        import importlib.util
        import ultra_prune.patches
        print(importlib.util.find_spec('patches') is None, ultra_prune.patches.__name__)
    """, tmp_path)
    assert r.stdout.split() == ["True", "ultra_prune.patches"]


def test_third_party_plugin_through_entry_point(tmp_path):
    """A package adding a channel rule through the ``ultra_prune`` group is used by the pruner."""
    (tmp_path / "my_rules.py").write_text(textwrap.dedent("""
        from ultra_prune.hookspecs import hookimpl
        CALLS = []
        @hookimpl
        def ultra_prune_channel_rule(module):
            if type(module).__name__ == 'SPPF':
                def rule(graph, m, x):
                    CALLS.append(type(m).__name__)
                    return graph.opaque(m, x, 'custom rule says keep')
                return rule
    """))
    dist = tmp_path / "my_rules-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-rules\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ultra_prune]\nmy_rules = my_rules\n")
    r = run_py("""
        import torch, my_rules
        from ultralytics.nn.tasks import DetectionModel
        from ultra_prune import prune_model
        pruned, info = prune_model(DetectionModel('yolov8n.yaml', verbose=False), 0.3)
        print(my_rules.CALLS, [s for s in info['left_intact'] if 'custom' in s])
    """, tmp_path, env={"PYTHONPATH": with_path(tmp_path)})
    assert "['SPPF'] ['SPPF (custom rule says keep)']" in r.stdout


def test_importing_the_pruning_core_changes_nothing_in_ultralytics():
    """``import ultra_prune.pruning`` imports no ultralytics; with the start-up hook off, ultralytics stays unpatched
    while the core prunes (its rules come from its own registry, not from the plugins or the trainers)."""
    script = textwrap.dedent("""
        import sys
        import ultra_prune.pruning as pruning
        assert "ultralytics" not in sys.modules and "ultra_prune.train.trainer" not in sys.modules
        from ultralytics.engine.model import Model
        from ultralytics.nn.tasks import DetectionModel
        import ultralytics
        pruned, info = pruning.prune_model(DetectionModel("yolov8n.yaml", verbose=False), 0.3)
        assert info["pruned"] and not getattr(ultralytics, "_ultra_prune_patched", False)
        assert not hasattr(Model, "prune") and "ultra_prune.train.trainer" not in sys.modules
        print("clean")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "ULTRA_PRUNE_DISABLE": "1", "YOLO_OFFLINE": "1"})
    assert r.returncode == 0 and "clean" in r.stdout, r.stderr[-2000:]

"""The key table: its choices match the pruner's registries, it loads without torch, the README's argument table is
made from it, and the package keeps its layers (``.ci/layers.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ultra_prune.config import docs
from ultra_prune.config.keys import COMMAND_KEYS, KEYS, LATENCY_RUNTIMES, PRUNE_BY, PRUNE_IMPORTANCES, SHARED

ROOT = Path(__file__).resolve().parents[1]


def test_choices_are_the_registries():
    from ultra_prune.latency import runtimes
    from ultra_prune.pruning import PRUNE_BY as budgets
    from ultra_prune.pruning.importance import NAMED

    assert PRUNE_BY == budgets and LATENCY_RUNTIMES == runtimes.LATENCY_RUNTIMES
    assert PRUNE_IMPORTANCES == ("auto", "taylor", *NAMED)


def test_every_command_key_is_described():
    assert all(k in KEYS or k in SHARED for k in COMMAND_KEYS["prune"])


def test_the_key_table_loads_without_torch():
    code = ("import sys, ultra_prune.config.keys, ultra_prune.config.docs, ultra_prune.config.settings, "
            "ultra_prune.patches.cfg; print(sorted(m for m in ('torch', 'ultralytics', 'ultra_prune.pruning') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"ULTRA_PRUNE_DISABLE": "1", "PATH": ""})
    assert r.stdout.strip() == "[]", r.stderr[-2000:]


def test_readme_argument_table_is_generated_from_the_keys():
    text = (ROOT / "README.md").read_text()
    if docs.START not in text:
        pytest.skip("the README has no argument-table markers")
    assert docs.with_table(text) == text, "run: python -m ultra_prune.config.docs README.md"
    assert all(f"| `{k}` |" in text for k in KEYS)


def test_the_package_keeps_its_layers():
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "layers.py")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

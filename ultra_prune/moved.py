"""Old module paths of the flat layout (before the subpackages), for what a pickle may name: checkpoints and DDP
files of earlier releases hold ``ultra_prune.distill.DistillCriterion`` (a student's criterion) and
``ultra_prune.trainer``'s classes and callbacks. Importing an old path gives the module that now holds its code."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {"ultra_prune.distill": "ultra_prune.slimming.distill", "ultra_prune.trainer": "ultra_prune.train.trainer"}


class _Alias(importlib.abc.Loader):
    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        """The module is already executed under its new name."""


class OldPaths(importlib.abc.MetaPathFinder):
    """Finds the old paths of ``MOVED``."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, _Alias()) if name in MOVED else None


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, OldPaths) for f in sys.meta_path):
        sys.meta_path.append(OldPaths())

"""Start-up hook, run by ``ultra_prune-autoload.pth``: apply ultra-prune's patches when ``ultralytics`` is imported.

This makes the stock ``yolo`` command and scripts that never import ultra_prune accept its arguments. It imports
neither torch nor ultralytics itself, never breaks interpreter start-up (any failure is one warning line), and
``ULTRA_PRUNE_DISABLE=1`` turns it off.
"""

import importlib.util
import os
import sys


def _warn(exc):
    sys.stderr.write(f"WARNING ⚠️ ultra-prune: not activated ({type(exc).__name__}: {exc}). "
                     "Set ULTRA_PRUNE_DISABLE=1 to silence, or import ultra_prune to see the full error.\n")


class _PatchOnImport:
    """A meta-path finder that wraps the loading of ``ultralytics`` so the patches run right after it."""

    def find_spec(self, name, path=None, target=None):
        if name != "ultralytics":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the find_spec below from recursing
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            try:
                from ultra_prune.patches import apply

                apply()
            except Exception as exc:  # noqa: BLE001 - a plugin must never break the user's import
                _warn(exc)

        spec.loader.exec_module = exec_then_patch
        return spec


def install():
    """Arm the hook unless disabled or ultralytics is already imported."""
    try:
        if os.environ.get("ULTRA_PRUNE_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}:
            return
        if "ultralytics" not in sys.modules and not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _PatchOnImport())
    except Exception as exc:  # noqa: BLE001
        _warn(exc)


install()

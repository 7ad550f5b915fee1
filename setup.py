"""Ships ``ultra_prune-autoload.pth`` at the top of site-packages, the ``ultra-prune`` script and the built-in
plugins' entry points, read from their one table in ``ultra_prune/plugins.py``; pyproject.toml holds the rest."""

import ast
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "ultra_prune-autoload.pth"


def builtin_plugins() -> list:
    """``name = module`` for every entry of ``BUILTINS`` in ultra_prune/plugins.py (read, not imported)."""
    tree = ast.parse(Path(__file__).with_name("ultra_prune").joinpath("plugins.py").read_text())
    table = next(ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "BUILTINS")
    return [f"{name} = {module}" for name, module in table.items()]


class BuildWithPth(build_py):
    """build_py that also places the start-up ``.pth`` file beside the packages (regular wheels)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(PTH, str(Path(self.build_lib) / PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


class EditableWithPth(editable_wheel):
    """editable_wheel whose wheel also carries the start-up ``.pth`` file (``pip install -e .``)."""

    def _select_strategy(self, name, tag, build_lib):
        strategy = super()._select_strategy(name, tag, build_lib)

        class WithPth:
            def __enter__(self):
                strategy.__enter__()
                return self

            def __exit__(self, *exc):
                return strategy.__exit__(*exc)

            def __call__(self, wheel, files, mapping):
                strategy(wheel, files, mapping)
                wheel.writestr(PTH, Path(PTH).read_text())

        return WithPth()


setup(cmdclass={"build_py": BuildWithPth, "editable_wheel": EditableWithPth},
      entry_points={"console_scripts": ["ultra-prune = ultra_prune.commands.cli:run"], "ultra_prune": builtin_plugins()})

"""Check the package's architecture: imports go only downward, the import floors, function lengths.

    python .ci/layers.py          print the measurements; exit 1 if a rule is broken

Rules: every module of ``ultra_prune`` belongs to a layer (``LAYERS``, lowest first) and imports only from its own
layer or lower ones (module-level and function-level imports alike); the longest chain of module-level imports
inside the package (module-level and function-level) is at most ``MAX_FLOORS`` floors (imports: a module that
imports nothing of the package is on floor 0); no function is longer than ``MAX_LINES`` lines, except the
rule tables of ``pruning/rules.py``.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "ultra_prune"
# Lowest first. A module belongs to the first entry that names it or a package above it (exact names first).
LAYERS = (
    ("ultra_prune.errors", "ultra_prune.hookspecs", "ultra_prune.moved", "ultra_prune.patches.versions"),
    ("ultra_prune.config", "ultra_prune.plugins"),
    ("ultra_prune.patches.__init__",),
    ("ultra_prune.pruning",),
    ("ultra_prune.io",),
    ("ultra_prune.latency",),
    ("ultra_prune.slimming",),
    ("ultra_prune.engine",),
    ("ultra_prune.train",),
    ("ultra_prune.commands",),
    ("ultra_prune.patches",),
    ("ultra_prune.__init__",),
)
MAX_FLOORS = 8
MAX_LINES = 60
LONG_ALLOWED = {("ultra_prune.pruning.rules", "_rules")}  # the rule table: one entry per block type


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package as ``pkg.__init__``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        out[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path
    return out


def resolve(name: str, known: dict) -> str | None:
    """The module ``name`` (dotted, perhaps an attribute of a module) refers to, or None outside the package."""
    while name:
        if name in known:
            return name
        if f"{name}.__init__" in known:
            return f"{name}.__init__"
        name = name.rpartition(".")[0]
    return None


def imports(name: str, path: Path, known: dict) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every intra-package import of ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    pkg = name.rpartition(".")[0] if not name.endswith(".__init__") else name[: -len(".__init__")]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            m = resolve(t, known)
            if m and m != name:
                found.append((m, id(node) in top))
    return found


def layer_of(module: str) -> int:
    """The layer of ``module``: the entry naming it exactly, else the first naming a package above it (an entry
    ``pkg.__init__`` names that module alone)."""
    for exact in (True, False):
        for i, names in enumerate(LAYERS):
            for n in names:
                if module == n if exact else not n.endswith(".__init__") and module.startswith(n + "."):
                    return i
    raise SystemExit(f"{module} is in no layer of .ci/layers.py")


def long_functions(name: str, path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and (name, node.name) not in LONG_ALLOWED:
                out.append((f"{name}.{node.name}", lines))
    return out


def main() -> int:
    known = modules()
    graph = {m: imports(m, p, known) for m, p in known.items()}
    upward = [(m, t) for m, ts in graph.items() for t, _ in ts if layer_of(t) > layer_of(m)]

    @lru_cache(maxsize=None)
    def chain(m: str, path: frozenset = frozenset()) -> tuple[str, ...]:
        """The longest chain of imports (module or function level) from ``m`` down that visits no module twice."""
        below = [chain(t, path | {m}) for t, _ in graph[m] if t not in path and t != m]
        return (m, *max(below, key=len, default=()))

    sys.setrecursionlimit(10000)
    longest = max((chain(m) for m in known), key=len)
    long = [f for m, p in known.items() for f in long_functions(m, p)]
    longest_fn = max(((f"{m}.{n.name}", n.end_lineno - n.lineno + 1) for m, p in known.items()
                      for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef)
                      and (m, n.name) not in LONG_ALLOWED), key=lambda t: t[1])
    print(f"import floors: {len(longest) - 1} ({' -> '.join(longest)})")
    print(f"upward imports: {len(upward)}" + "".join(f"\n  {m} -> {t}" for m, t in upward))
    print(f"longest function: {longest_fn[0]} ({longest_fn[1]} lines); over {MAX_LINES}: {long or 'none'}")
    return 1 if upward or long or len(longest) - 1 > MAX_FLOORS else 0


if __name__ == "__main__":
    sys.exit(main())

"""The architecture's rules, checked on the source: layers, no import cycle, modules of readable size."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "coldpipe"
PURE = {"core", "planning"}
PURE_THIRD_PARTY = {"numpy", "numba", "pyscipopt", "highspy"}
PURE_COLDPIPE = {"coldpipe.core", "coldpipe.planning", "coldpipe.errors", "coldpipe.units"}
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (``from X import y``: X and X.y)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}


def test_no_import_cycle() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its modules is not a cycle with them: drop package -> submodule edges
    edges = {m: {i for i in deps if not i.startswith(m + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(edges[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(d) :], d]))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_core_and_planning_import_only_the_standard_library_numpy_numba_and_solvers() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    bad = []
    for pkg in PURE:
        for path in (SRC / pkg).rglob("*.py"):
            for imp in _imports(path):
                top = imp.split(".")[0]
                if top == "coldpipe":
                    if not any(imp == p or imp.startswith(p + ".") for p in PURE_COLDPIPE):
                        bad.append(f"{path.relative_to(SRC)}: {imp}")
                elif top not in stdlib and top not in PURE_THIRD_PARTY:
                    bad.append(f"{path.relative_to(SRC)}: {imp}")
    assert not bad, bad


def test_core_does_not_import_planning() -> None:
    bad = [
        f"{p.relative_to(SRC)}: {i}"
        for p in (SRC / "core").rglob("*.py")
        for i in _imports(p)
        if i.startswith("coldpipe.planning")
    ]
    assert not bad, bad


def test_no_module_imports_another_modules_private_names() -> None:
    """``from m import _x`` only for a package-private module ``_x`` of the importer's own package."""
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    bad = []
    for path in SRC.rglob("*.py"):
        package = _module_name(path).rpartition(".")[0] if path.name != "__init__.py" else _module_name(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("coldpipe"):
                for a in node.names:
                    own_private_module = f"{node.module}.{a.name}" in modules and node.module == package
                    if a.name.startswith("_") and not own_private_module:
                        bad.append(f"{path.relative_to(SRC)}: {node.module}.{a.name}")
    assert not bad, bad


def test_no_module_is_over_700_lines() -> None:
    long = {str(p.relative_to(SRC)): n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long

"""The package's shape, checked: no import cycle, SQL only in sqlatasks/sql/, small modules
and functions (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sqlatasks"
SQL_BUILDERS = {"text", "select", "insert", "update", "delete"}
MAX_MODULE_LINES = 320
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, ast.Module]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), filename=str(path))
    return found


def _runtime_imports(tree: ast.Module, module: str, known: set[str]) -> set[str]:
    """The sqlatasks modules `module` imports when it runs (not under `if TYPE_CHECKING:`)."""
    found: set[str] = set()
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for child in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if full in known:
                    found.add(full)
                elif node.module in known:
                    found.add(node.module)
    found.discard(module)
    # Importing a submodule runs its package first.
    return found | {m.rpartition(".")[0] for m in found if m.count(".") > 1} - {module}


def test_no_import_cycle_in_sqlatasks() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _runtime_imports(tree, name, known) for name, tree in modules.items()}
    graph["sqlatasks"] = set()  # __init__ imports the public API; nothing imports it back
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycles.append([*path[path.index(target) :], target])
            elif len(path) < 30:
                visit(target, [*path, target])

    for start in sorted(graph):
        visit(start, [start])
    assert not cycles, cycles[0]


def test_only_the_sql_folder_builds_sql() -> None:
    offenders = []
    for name, tree in _modules().items():
        if name.startswith(("sqlatasks.sql", "sqlatasks.migrations")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                bad = {a.name for a in node.names} & SQL_BUILDERS
                if bad:
                    offenders.append(f"{name} imports {sorted(bad)} from {node.module}")
    assert not offenders


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        lines = source.count("\n")
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.name}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}:{node.name}: {length} lines")
    assert not too_long

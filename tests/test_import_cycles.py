"""No import cycles between the framework's modules, including imports inside functions.

An import inside a function that closes a cycle works only because of when it runs;
the modules still depend on each other. Imports under ``if TYPE_CHECKING:`` are for
the type checker only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("framework", "plugins")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Names of modules imported anywhere in ``tree`` (outside ``if TYPE_CHECKING``)."""
    found: set[str] = set()
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a submodule or the package itself)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = _imported(tree, name, path.name == "__init__.py")
        graph[name] = {n for n in names if n in modules and n != name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def _package_graph(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    """Edges between the modules of one package (its ``__init__`` re-exports left out).

    A package's ``__init__`` imports its modules to re-export them; a module importing
    a sibling through the package name is not the cycle this test looks for, which is
    module to module.
    """
    inside = {m for m in graph if m.startswith(package + ".")}
    return {m: graph[m] & inside for m in inside}


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count() -> None:
    tree = ast.parse(
        "import typing\n"
        "if typing.TYPE_CHECKING:\n    import framework.cell\n"
        "def f():\n    from framework.store import redis\n"
    )
    found = _imported(tree, "framework.x", is_package=False)
    assert "framework.store.redis" in found
    assert "framework.cell" not in found


@pytest.mark.parametrize(
    "package",
    sorted({m.rsplit(".", 1)[0] for m in _modules() if "." in m} | set(PACKAGES)),
)
def test_no_import_cycle_between_modules_of_a_package(package: str) -> None:
    cycles = find_cycles(_package_graph(import_graph(), package))
    assert not cycles, f"Import cycles in {package}: {cycles}"

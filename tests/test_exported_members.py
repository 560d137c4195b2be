"""The façade and every public module keep ``__all__`` complete, sorted and importable."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import framework

PUBLIC_MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(framework.__path__, "framework.")
    if not any(part.startswith("_") for part in m.name.split("."))
)


def test_facade_exports_resolve_and_are_sorted() -> None:
    assert framework.__all__ == sorted(framework.__all__, key=lambda n: (not n.isupper(), n))
    for name in framework.__all__:
        assert getattr(framework, name) is not None, name


def test_facade_names_come_from_their_layers() -> None:
    from framework.cell import StreamCell
    from framework.store import RedisStore
    from framework.stream import StreamProducer

    assert framework.StreamCell is StreamCell
    assert framework.RedisStore is RedisStore
    assert framework.StreamProducer is StreamProducer


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_module_all_lists_only_existing_names(name: str) -> None:
    module: ModuleType = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        pytest.fail(f"{name} has no __all__")
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"


PURE_MODULES = [
    "framework.keys",
    "framework.buffers",
    "framework.framing",
    "framework.serialize",
    "framework.exceptions",
    "framework.cell.frames",
    "framework.cell.window",
    "framework.cell.assembler",
    "framework.stream.events",
    "framework.stream.filters",
    "framework.objects.api",
    "framework.objects.config",
    "framework.objects.context",
    "framework.objects.envelope",
    "framework.objects.receiver",
    "framework.objects.sending",
    "framework.objects.session",
    "framework.objects.shareable",
]


def _imports(module: str) -> set[str]:
    """Modules named by ``module``'s own import statements (not its package's ``__init__``)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None, module
    assert spec.origin is not None, module
    tree = ast.parse(Path(spec.origin).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from framework.cell import frames`` names a submodule.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _is_module(name: str) -> bool:
    """Whether ``name`` is a module (``from pkg.mod import func`` also yields ``pkg.mod.func``)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _closure(module: str) -> set[str]:
    """Every module reachable from ``module`` through framework-internal imports."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for dep in _imports(name):
            if dep.startswith("framework.") and _is_module(dep):
                todo.append(dep)
            else:
                seen.add(dep)
    return seen


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_modules_import_no_redis(module: str) -> None:
    """Framing, key names, window accounting and the event codec stay free of Redis."""
    redis = sorted(n for n in _closure(module) if n.split(".")[0] in {"redis", "fakeredis"})
    assert not redis, f"{module} reaches {redis}"


def test_layers_point_down() -> None:
    """No layer imports one above it: cli/demo > objects > cell > stream > pubsub/store > rest."""
    rank = {
        "cli": 6,
        "testing": 6,
        "demo": 5,
        "objects": 4,
        "cell": 3,
        "stream": 2,
        "pubsub": 1,
        "store": 1,
        "connectors": 1,
    }
    for name in PUBLIC_MODULES:
        layer = name.split(".")[1] if name.count(".") else ""
        for dep in _imports(name):
            parts = dep.split(".")
            if parts[0] != "framework" or len(parts) < 2 or parts[1] == layer:
                continue
            assert rank.get(parts[1], 0) <= rank.get(layer, 0), f"{name} imports {dep}"

"""Packaging: what a plain ``pip install`` puts into site-packages, and the metadata."""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest
import tomllib

import framework

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _tree_packages() -> set[str]:
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "framework").rglob("__init__.py")
    }
    return found | {"framework_plugins"}


def test_every_package_in_the_tree_is_installed() -> None:
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == _tree_packages()


def test_plugins_install_under_a_name_that_cannot_collide() -> None:
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"framework_plugins": "plugins"}
    stores = {ep.name: ep.value for ep in entry_points(group="framework.stores")}
    assert stores["memory"] == "framework_plugins.memory:MemoryStore"
    assert stores["file"] == "framework_plugins.file:FileStore"
    for ep in entry_points(group="framework.stores"):
        assert ep.load().__module__.startswith("framework_plugins.")


def test_the_version_lives_in_one_place() -> None:
    assert "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "framework.__version__"
    }
    assert version("framework") == framework.__version__


def test_license_file_matches_the_declared_license() -> None:
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_library_loggers_have_a_null_handler() -> None:
    for name in ("framework", "framework_plugins"):
        __import__(name)
        handlers = logging.getLogger(name).handlers
        assert any(isinstance(h, logging.NullHandler) for h in handlers), name


def test_linters_are_pinned_exactly() -> None:
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    for tool in ("ruff", "mypy"):
        (spec,) = [d for d in dev if d.split("=")[0].split(">")[0] == tool]
        assert spec.startswith(f"{tool}=="), spec


def test_demo_runtime_needs_are_plain_dependencies() -> None:
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for name in ("fakeredis[lua]", "click", "rich", "numpy"):
        assert name in deps


def test_the_pytest_plugin_is_registered() -> None:
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "framework"]
    assert ep.value == "framework.testing.plugin"


def test_framework_testing_imports_without_pytest() -> None:
    code = (
        "import sys; sys.modules['pytest'] = None\n"
        "import framework.testing, framework.cli\n"
        "try:\n    framework.testing.StoreContractTests\n"
        "except ImportError:\n    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


@pytest.mark.slow
def test_the_wheel_holds_no_top_level_plugins_package(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("framework-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        assert "framework/py.typed" in archive.namelist()
        assert "framework_plugins/memory.py" in archive.namelist()
    assert tops == {
        "framework",
        "framework_plugins",
        f"framework-{framework.__version__}.dist-info",
    }

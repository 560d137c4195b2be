"""``framework bench``: run the benchmark suite of a source checkout and print its tables."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path
from types import ModuleType

import click
from rich.markdown import Markdown

from framework.cli._common import console

__all__ = ["bench"]


def _suite() -> ModuleType:
    """The ``benchmarks`` package: importable, or in the current directory (a checkout)."""
    try:
        return importlib.import_module("benchmarks")
    except ImportError:
        if not (Path.cwd() / "benchmarks" / "__init__.py").is_file():
            raise click.ClickException(
                "The benchmark suite ships with the source checkout, not with the installed "
                "package: run `framework bench` in the checkout's top directory."
            ) from None
        sys.path.insert(0, str(Path.cwd()))
        return importlib.import_module("benchmarks")


def _available(suite: ModuleType) -> list[str]:
    names = (m.name for m in pkgutil.iter_modules(suite.__path__))
    return sorted(n.removeprefix("bench_") for n in names if n.startswith("bench_"))


@click.command()
@click.argument("names", nargs=-1)
@click.option("--quick", is_flag=True, help="Small sizes: a smoke run of a few seconds each.")
def bench(names: tuple[str, ...], quick: bool) -> None:
    """Run benchmarks (default: all) and print their tables, baselines side by side.

    Each benchmark starts its own redis-server. NAMES are module names under
    `benchmarks/` without the `bench_` prefix, e.g. `store` or `cell`.
    """
    suite = _suite()
    available = _available(suite)
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise click.UsageError(f"Unknown benchmark(s) {', '.join(unknown)}; known: {available}.")
    for name in names or available:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        console.rule(f"benchmark: {name}")
        console.print(Markdown(module.run(quick=quick)))
        console.print(f"({name}: {time.perf_counter() - started:.0f} s)")

"""Run benchmark modules: ``python -m benchmarks [connection store stream cell] [--quick]``.

Each ``benchmarks/bench_<name>.py`` defines ``run(quick: bool) -> str`` returning a
markdown report; results are printed and written to ``benchmarks/results/<name>.md``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks

RESULTS = Path(__file__).parent / "results"


def _available() -> list[str]:
    names = (m.name for m in pkgutil.iter_modules(benchmarks.__path__))
    return sorted(n.removeprefix("bench_") for n in names if n.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", help=f"benchmarks to run (default: all of {_available()})"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(_available())
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    RESULTS.mkdir(exist_ok=True)
    for name in args.names or _available():
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        print(f"## {name}", flush=True)
        report = module.run(quick=args.quick)
        print(report, flush=True)
        print(f"({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
        (RESULTS / f"{name}.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

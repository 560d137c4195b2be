"""Helpers shared by the benchmark modules: timing, tables, child processes, RSS."""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

MB = 1 << 20
SPAWN = mp.get_context("spawn")


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Render rows as a markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(cell: Any) -> str:
    if isinstance(cell, float):
        return f"{cell:,.2f}" if cell < 100 else f"{cell:,.0f}"
    return str(cell)


def peak_rss_mb() -> float:
    """Peak resident set size of the calling process, in MB.

    Reads ``VmHWM`` from /proc: ``ru_maxrss`` of a spawned child starts at its
    parent's peak (it is inherited across fork+exec), so it overstates the child.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_in_child(target: Callable[..., Any], *args: Any, timeout: float = 600) -> Any:
    """Run ``target(*args)`` in a spawned process and return its result (must be picklable)."""
    with SPAWN.Pool(1) as pool:
        return pool.apply_async(target, args).get(timeout)

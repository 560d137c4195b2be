"""``framework demo``: the main job end to end, with progress bars and a summary table."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn
from rich.table import Table

from framework.cli._common import Bars, connect, console, url_option
from framework.cli._text import shown
from framework.demo import FAKEREDIS_PLAN, DemoPlan, StepResult, run_demo

__all__ = ["demo"]

F = TypeVar("F", bound=Callable[..., Any])


def _summary(results: list[StepResult]) -> Table:
    table = Table(title="Delivered intact: every receiver's count, bytes and SHA-256 match")
    table.add_column("step")
    for name in ("items received", "MB received", "seconds", "MB/s"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            r.step, str(r.items), f"{r.nbytes / 1e6:,.1f}", f"{r.seconds:.2f}", f"{r.mb_per_s:,.0f}"
        )
    return table


def _count(name: str, text: str, minimum: int = 1) -> Callable[[F], F]:
    # No click default: an option not given keeps the plan's (smaller on fakeredis).
    field = name.removeprefix("--").replace("-", "_")
    default, fake = getattr(DemoPlan(), field), getattr(FAKEREDIS_PLAN, field)
    return click.option(
        name,
        type=click.IntRange(min=minimum),
        default=None,
        help=f"{text}  [default: {default}; {fake} on fakeredis]",
    )


@click.command()
@url_option
@_count("--records", "Small records on the object stream.", minimum=0)
@_count("--arrays", "numpy arrays on the object stream.", minimum=0)
@_count("--array-mb", "MiB per array.")
@_count("--blob-mb", "MiB of the byte-stream blob (uploaded once, received by two cells).")
@_count("--rounds", "Object-protocol rounds (model weights out, a reply from each cell).")
@_count("--round-mb", "MiB of model weights per round.")
def demo(url: str | None, **sizes: int | None) -> None:
    """Run the main job across processes and print what it moved.

    An object stream (records and numpy arrays on a durable topic) to a consumer
    process, then a byte stream (one blob, uploaded once) to two cells in two more
    processes, then object-protocol rounds (a Shareable of model weights to both
    cells, a reply from each). Seconds run from the first send to the last receive.
    Without a URL, an embedded Redis is started; with one, the run's keys are deleted
    at the end.
    """
    if url:
        with connect(url):  # its errors before any child process starts or bar is drawn
            pass
    given = {name: value for name, value in sizes.items() if value is not None}
    plan = dataclasses.replace(DemoPlan(), **given) if given else None
    tasks: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description:<34}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
    )
    with Bars(*columns, console=console) as bars:

        def progress(step: str, completed: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=completed, total=total)

        results = run_demo(
            url, plan=plan, progress=progress, echo=lambda text: console.print(shown(text))
        )
        for task in tasks.values():  # a step can end between two progress reports
            bars.update(task, completed=bars.tasks[task].total)
    console.print(_summary(results))
    console.print("OK: everything sent arrived intact.")

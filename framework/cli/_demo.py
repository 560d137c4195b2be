"""``framework demo``: the main job end to end, with progress bars and a summary table."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from framework.cli._common import console, url_option
from framework.demo import DemoPlan, StepResult, run_demo

__all__ = ["demo"]


def _summary(results: list[StepResult]) -> Table:
    table = Table(title="Delivered intact (count, bytes and SHA-256 match on both sides)")
    table.add_column("step")
    for name in ("items", "MB", "seconds", "MB/s"):
        table.add_column(name, justify="right")
    for r in results:
        table.add_row(
            r.step, str(r.items), f"{r.nbytes / 1e6:,.1f}", f"{r.seconds:.2f}", f"{r.mb_per_s:,.0f}"
        )
    return table


@click.command()
@url_option
@click.option(
    "--records",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="Small records on the object stream.",
)
@click.option(
    "--arrays",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="numpy arrays on the object stream.",
)
@click.option(
    "--array-mb", type=click.IntRange(min=1), default=4, show_default=True, help="MiB per array."
)
@click.option(
    "--blob-mb",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="MiB of the byte-stream blob (uploaded once, received by two cells).",
)
def demo(url: str | None, records: int, arrays: int, array_mb: int, blob_mb: int) -> None:
    """Run the main job across processes and print what it moved.

    An object stream (records and numpy arrays on a durable topic) to a consumer
    process, then a byte stream (one blob, uploaded once) to two cells in two more
    processes. Seconds run from the first send to the last receive. Without a URL,
    an embedded Redis is started; with one, the run's keys are deleted at the end.
    """
    plan = DemoPlan(records=records, arrays=arrays, array_mb=array_mb, blob_mb=blob_mb)
    tasks: dict[str, TaskID] = {}
    columns = (TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=console) as bars:

        def progress(step: str, completed: int, total: int) -> None:
            if step not in tasks:
                tasks[step] = bars.add_task(step, total=total)
            bars.update(tasks[step], completed=completed, total=total)

        results = run_demo(url, plan=plan, progress=progress, echo=console.print)
        for task in tasks.values():  # a step can end between two progress reports
            bars.update(task, completed=bars.tasks[task].total)
    console.print(_summary(results))
    console.print("OK: everything sent arrived intact.")

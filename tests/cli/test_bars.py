"""The progress display of ``send`` and ``recv``: few bars on screen, however many files.

rich redraws every visible bar with each new bar and each refresh; a bar kept for each
of a thousand files made both commands spend minutes drawing.
"""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import TaskID

from framework.cli._common import SHOWN_BARS, Bars


def _visible(bars: Bars) -> list[str]:
    return [task.description for task in bars.tasks if task.visible]


def test_running_files_come_first_and_finished_ones_make_room() -> None:
    bars = Bars(console=Console(file=io.StringIO()))
    tasks: list[TaskID] = [bars.add_file(f"f{i}", 10) for i in range(SHOWN_BARS + 5)]
    assert _visible(bars) == [f"f{i}" for i in range(SHOWN_BARS)]  # the others wait
    bars.finish(tasks[0])  # its place goes to the first waiting file
    assert _visible(bars) == [f"f{i}" for i in range(1, SHOWN_BARS + 1)]
    bars.finish(tasks[-1])  # finished before it was shown: never shown
    assert "f14" not in [task.description for task in bars.tasks]
    for task in tasks[1 : SHOWN_BARS + 4]:
        bars.finish(task)
    # Nothing waits: the latest finished bars stay, up to the limit.
    assert _visible(bars) == [f"f{i}" for i in range(4, SHOWN_BARS + 4)]
    assert len(bars.tasks) == SHOWN_BARS  # the bars that made room are gone for good
    bars.add_file("new", 10)  # a new file takes the oldest finished bar's place
    assert _visible(bars) == [*(f"f{i}" for i in range(5, SHOWN_BARS + 4)), "new"]

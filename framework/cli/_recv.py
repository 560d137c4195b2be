"""``framework recv``: receive the files sent to a cell, verified, never replacing a file.

See :mod:`framework.cli._receiving` for atomic writes, resuming and the free names a
file gets when its name is taken.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import click
from rich.progress import TaskID

from framework.cell import CellConfig, StreamCell
from framework.cell.inbox import Inbox
from framework.cell.transport import TransferIO
from framework.cli._common import (
    TIMEOUT,
    Bars,
    connect,
    console,
    echo_problem,
    require_url,
    scrub,
    transfer_bars,
    url_option,
)
from framework.cli._receiving import FileEvent, FileReceiver, part_path
from framework.cli._text import shown, visible
from framework.cli._transfer import CHANNEL, TOPIC, file_name
from framework.connection import RedisConnection
from framework.exceptions import StreamError

__all__ = ["recv"]


class _RecvView:
    """Progress bars and status lines for ``recv`` (events come from receiver threads).

    Every name and message here comes from a sender: it is printed escaped.
    """

    def __init__(self, bars: Bars) -> None:
        self.bars = bars
        self.tasks: dict[int, TaskID] = {}
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, event: FileEvent) -> None:
        self.last_activity = time.monotonic()
        with self._lock:
            if event.kind == "start":
                self.tasks[event.sid] = self.bars.add_file(
                    visible(event.name), event.total, event.done
                )
            elif event.kind == "progress" and event.sid in self.tasks:
                self.bars.update(self.tasks[event.sid], completed=event.done)
            elif event.sid in self.tasks:  # the file is through (or this receiver stops)
                self.bars.finish(self.tasks.pop(event.sid))
            if event.kind == "done":
                console.print(_arrival(event))
            elif event.kind == "cancelled":
                console.print(
                    f"Cancelled by the sender: {shown(event.name)} (the partial file was removed)"
                )
            elif event.kind == "paused":
                console.print(
                    f"Stopped {shown(event.name)} after {event.done:,} bytes; run the same "
                    "`recv` again to continue it."
                )
            elif event.kind == "error":
                echo_problem(f"Failed: {visible(event.name)}: {event.detail}")


def _drop_lost_parts(conn: RedisConnection, cell_name: str, out_dir: Path) -> None:
    """Delete the partial files of this cell's transfers that ended while it was away.

    A transfer this cell had begun stays in its inbox until it is handled; if the
    transfer's keys expired meanwhile (the sender failed, cancelled or gave up more than
    a minute before), nothing can resume it, and the cell drops the announcement
    without a callback. Only the partial files such announcements name are deleted: a
    part of another Redis's transfer in the same directory is left alone.
    """
    config = CellConfig()
    for _, ann in Inbox(conn, cell_name, config.inbox_ttl).pending():
        if ann is None or TransferIO(conn, ann.sid, config.ttl).load() is not None:
            continue
        try:
            part = part_path(out_dir, file_name(ann.headers), ann.sid)
        except StreamError:
            continue  # a name no part was ever written under
        if part.exists():
            part.unlink()
            console.print(
                f"Dropped the partial {shown(part.name)}: its sender's transfer ended "
                "while this receiver was away; send the file again."
            )


def _arrival(event: FileEvent) -> str:
    """The line for a file in place, saying where it went when that is not its name."""
    path, name = shown(event.path), shown(repr(event.name))
    if event.detail == "renamed":
        return f"Received {name} as {path} (SHA-256 verified; the name was taken)"
    if event.detail == "identical":
        return f"Received {name} (SHA-256 verified): already there as {path}, kept once"
    return f"Received {path} (SHA-256 verified)"


def _wait_files(
    receiver: FileReceiver,
    view: _RecvView,
    count: int | None,
    timeout: float | None,
    cell: StreamCell,
) -> None:
    health = _CellHealth(cell)
    with receiver.changed:
        while count is None or receiver.finished + receiver.failed < count:
            receiver.changed.wait(0.5)
            health.tell_changes()
            if timeout is None or time.monotonic() - view.last_activity <= timeout:
                continue
            if count is None and receiver.finished:  # drained: what came is all there is
                console.print(f"No new file for {timeout:g} s; {receiver.finished} received.")
                return
            done = receiver.finished + receiver.failed
            of = f" ({done} of {count} files came)" if count is not None else ""
            raise click.ClickException(f"No file arrived or progressed for {timeout:g} s{of}.")


class _CellHealth:
    """Tells the user, once each, what keeps the cell from taking files and when it ends.

    Without ``-v`` the cell's warnings are not shown, yet these change what arrives: a
    recv that cannot read Redis, or whose name another receiver took, takes no files.
    """

    def __init__(self, cell: StreamCell) -> None:
        self.cell = cell
        self._taken_by: str | None = None
        self._failing: str | None = None

    def tell_changes(self) -> None:
        """Print a line for each state that began or ended since the last call."""
        self._tell_taken(self.cell.name_taken_by)
        self._tell_failing(self.cell.receiving_fails)

    def _tell_taken(self, holder: str | None) -> None:
        if holder == self._taken_by:
            return
        self._taken_by = holder
        name = shown(repr(self.cell.name))
        if holder is not None:
            console.print(
                f"Warning: another receiver ({shown(holder)}) took the cell name {name} "
                "while this one was out of touch with Redis; "
                "this one takes no new files until that one stops."
            )
        else:
            console.print(f"This receiver has the cell name {name} back.")

    def _tell_failing(self, failing: str | None) -> None:
        if (failing is None) == (self._failing is None):  # a new wording of the same outage
            return
        self._failing = failing
        if failing is not None:
            text = shown(scrub(click.get_current_context(silent=True), failing))
            console.print(f"Warning: cannot read from Redis ({text}); retrying until it answers.")
        else:
            console.print("Reading from Redis works again.")


@click.command()
@url_option
@click.option("--as", "cell_name", required=True, help="This receiver's cell name.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the files.",
)
@click.option(
    "--count",
    type=click.IntRange(min=1),
    default=None,
    help="Exit after this many files, delivered or failed (default: run until Ctrl-C).",
)
@click.option(
    "--timeout",
    type=TIMEOUT,
    default=None,
    help=(
        "Exit after this many seconds without any arrival or progress: with status 0 if "
        "files arrived (and --count, if given, was reached), else 1."
    ),
)
def recv(
    url: str | None, cell_name: str, out_dir: Path, count: int | None, timeout: float | None
) -> None:
    """Receive files sent to CELL into DIR, verified, each renamed into place when complete.

    A partial file is named `.NAME.ID.part` until its SHA-256 matches. Stopped or
    killed, run the same command again: unfinished files continue where they were. A
    file the sender cancels is dropped with its partial file.

    A file never replaces another: if NAME is taken in DIR (from before, or by an
    earlier file of the same name), the file is saved as `NAME (1).EXT` (or the next
    free number) and the line saying it arrived names the file it went to; if the file
    there has the same content, the new copy is dropped instead.
    """
    url = require_url(url, "recv")
    with connect(url) as conn, transfer_bars() as bars:
        out_dir.mkdir(parents=True, exist_ok=True)  # once Redis answered: not for a typo
        _drop_lost_parts(conn, cell_name, out_dir)
        view = _RecvView(bars)
        receiver = FileReceiver(out_dir, view)
        with StreamCell(conn, cell_name) as cell:
            cell.register_stream_cb(CHANNEL, TOPIC, receiver)
            console.print(
                f"Receiving as cell {shown(repr(cell_name))} into {shown(out_dir)} (Ctrl-C stops)."
            )
            _wait_files(receiver, view, count, timeout, cell)
    if receiver.failed:
        raise click.ClickException(f"{receiver.failed} file(s) failed; see above.")

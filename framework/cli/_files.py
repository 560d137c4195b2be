"""``framework send`` and ``framework recv``: files between machines through a shared Redis.

See :mod:`framework.cli._transfer` for the protocol, resume and atomic writes.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from framework.cell import CellConfig, StreamCell, StreamFuture
from framework.cli._common import connect, console, require_url, url_option
from framework.cli._transfer import CHANNEL, TOPIC, FileOffer, FileReceiver, SendState, start_send
from framework.exceptions import StreamTimeout

__all__ = ["recv", "send"]

#: Seconds between two progress refreshes of ``send``.
REFRESH = 0.1


if TYPE_CHECKING:
    _IntParam = click.ParamType[int]
else:  # click's ParamType is generic only in recent releases
    _IntParam = click.ParamType


class ByteRate(_IntParam):
    """A rate like ``500K``, ``20M`` or ``1G`` (bytes per second; powers of 1024)."""

    name = "rate"
    _UNITS: ClassVar[dict[str, int]] = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """Parse ``value`` into bytes per second."""
        if isinstance(value, int):
            return value
        text = str(value).strip().upper().removesuffix("B")
        number, unit = (text[:-1], text[-1]) if text[-1:] in self._UNITS else (text, "")
        try:
            rate = int(float(number) * self._UNITS[unit])
        except ValueError:
            self.fail(f"{value!r} is not a rate like 500K, 20M or 1G.", param, ctx)
        if rate < 1:
            self.fail(f"{value!r} is below one byte per second.", param, ctx)
        return rate


def _cell_config(timeout: float) -> CellConfig:
    """The sender's config: heartbeats stay well inside the receivers' idle timeout."""
    return CellConfig(idle_timeout=timeout, heartbeat=min(CellConfig().heartbeat, timeout / 4))


def _default_state_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "framework" / "sends"


def _bars() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


Started = list[tuple[FileOffer, str, StreamFuture, TaskID]]


def _wait_sends(bars: Progress, started: Started) -> None:
    while not all(future.done() for _, _, future, _ in started):
        for _, _, future, task in started:
            bars.update(task, completed=future.get_progress())
        time.sleep(REFRESH)
    for offer, _, future, task in started:
        if future.exception(timeout=0) is None:
            bars.update(task, completed=offer.size)


def _failure(
    offer: FileOffer, future: StreamFuture, targets: tuple[str, ...], timeout: float
) -> str | None:
    exc = future.exception(timeout=0)
    if exc is None:
        return None
    if isinstance(exc, StreamTimeout) or isinstance(exc.__cause__, StreamTimeout):
        return (
            f"{offer.name}: no receiver among {', '.join(targets)} made progress within "
            f"{timeout:g} s; is `framework recv --as <cell>` running against this Redis?"
        )
    return f"{offer.name}: {type(exc).__name__}: {exc}"


@click.command()
@url_option
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
)
@click.option(
    "--to",
    "targets",
    multiple=True,
    required=True,
    help="A receiving cell; repeat it to send one upload to several cells.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds without progress from the receivers (for instance a target "
    "that was never started) before a file fails.",
)
@click.option(
    "--limit-rate",
    "rate",
    type=ByteRate(),
    default=None,
    help="Read each file no faster than this many bytes per second (e.g. 500K, 20M).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FRAMEWORK_STATE_DIR",
    default=_default_state_dir,
    show_envvar=True,
    help="Where unfinished sends are remembered for resuming.",
)
def send(
    url: str | None,
    paths: tuple[Path, ...],
    targets: tuple[str, ...],
    timeout: float,
    rate: int | None,
    state_dir: Path,
) -> None:
    """Send files to one or more cells (each running `framework recv --as CELL`).

    Each file goes into Redis once, however many cells receive it; every receiver
    checks its SHA-256. If the sender is killed, run the same command again: it
    resumes after the last chunk in Redis. Ctrl-C cancels the transfers instead.
    """
    url = require_url(url, "send")
    offers = [FileOffer.of(path) for path in paths]
    state = SendState(state_dir)
    name = f"send-{socket.gethostname()}-{os.getpid()}"
    with (
        connect(url) as conn,
        StreamCell(conn, name, config=_cell_config(timeout)) as cell,
        _bars() as bars,
    ):
        started: Started = []
        for offer in offers:
            key = state.key(f"{conn.url()} {conn.keys.prefix}", offer, targets)
            future, resumed = start_send(cell, offer, targets, state, key, rate)
            label = f"{'resume ' if resumed else ''}{offer.name} -> {', '.join(targets)}"
            started.append((offer, key, future, bars.add_task(label, total=offer.size)))
        _wait_sends(bars, started)
    failures = []
    for offer, key, future, _ in started:
        state.forget(key)  # delivered, or failed for good: a failed transfer cannot resume
        problem = _failure(offer, future, targets, timeout)
        if problem:
            failures.append(problem)
        else:
            console.print(f"Sent {offer.name} ({offer.size:,} bytes, SHA-256 {offer.sha256[:16]}…)")
    if len(failures) == 1:
        raise click.ClickException(failures[0])
    if failures:
        for problem in failures:
            click.echo(f"Failed: {problem}", err=True)
        raise click.ClickException(f"{len(failures)} of {len(offers)} files were not delivered.")


class _RecvView:
    """Progress bars and status lines for ``recv`` (events come from receiver threads)."""

    def __init__(self, bars: Progress) -> None:
        self.bars = bars
        self.tasks: dict[str, TaskID] = {}
        self.last_activity = time.monotonic()
        self._lock = threading.Lock()

    def __call__(self, kind: str, name: str, done: int, total: int) -> None:
        self.last_activity = time.monotonic()
        with self._lock:
            if kind == "start":
                self.tasks[name] = self.bars.add_task(name, total=total, completed=done)
            elif kind == "progress" and name in self.tasks:
                self.bars.update(self.tasks[name], completed=done)
            elif kind == "done":
                console.print(f"Received {name} (SHA-256 verified)")
            elif kind == "error":
                click.echo(f"Failed: {name}", err=True)


def _wait_files(
    receiver: FileReceiver, view: _RecvView, count: int | None, timeout: float | None
) -> None:
    with receiver.changed:
        while count is None or receiver.finished + receiver.failed < count:
            receiver.changed.wait(0.5)
            if timeout is not None and time.monotonic() - view.last_activity > timeout:
                raise click.ClickException(f"No file arrived or progressed for {timeout:g} s.")


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
    help="Exit after this many files (default: run until Ctrl-C).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Exit with status 1 after this many seconds without any arrival or progress.",
)
def recv(
    url: str | None, cell_name: str, out_dir: Path, count: int | None, timeout: float | None
) -> None:
    """Receive files sent to CELL into DIR, verified, each renamed into place when complete.

    A partial file is named `.NAME.ID.part` until its SHA-256 matches. Stopped or
    killed, run the same command again: unfinished files continue where they were.
    """
    url = require_url(url, "recv")
    out_dir.mkdir(parents=True, exist_ok=True)
    with connect(url) as conn, _bars() as bars:
        view = _RecvView(bars)
        receiver = FileReceiver(out_dir, view)
        with StreamCell(conn, cell_name) as cell:
            cell.register_stream_cb(CHANNEL, TOPIC, receiver)
            console.print(f"Receiving as cell {cell_name!r} into {out_dir} (Ctrl-C stops).")
            _wait_files(receiver, view, count, timeout)
    if receiver.failed:
        raise click.ClickException(f"{receiver.failed} file(s) failed; see above.")

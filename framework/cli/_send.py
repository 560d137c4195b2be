"""``framework send``: files to one or more cells through a shared Redis.

The transfers run in a thread of their own; the command's thread only waits for them
and watches Redis (:class:`~framework.cli._watch.RedisWatch`). So ``--timeout`` holds
also when Redis freezes and every call in the transfer thread hangs: the command ends
once Redis has been silent that long, and the transfers left behind resume when the
same command runs again. Ctrl-C cancels the transfers instead, and forgets them: the
same command then starts afresh. See :mod:`framework.cli._transfer` for the protocol.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import click
from rich.progress import TaskID

from framework.cell import CellConfig, StreamCell, StreamFuture
from framework.cli._common import (
    TIMEOUT,
    Bars,
    cli_settings,
    connect,
    console,
    echo_problem,
    require_url,
    transfer_bars,
    url_option,
)
from framework.cli._receiving import numbered
from framework.cli._text import shown, visible
from framework.cli._transfer import FileOffer, SendState, start_send
from framework.cli._watch import RedisWatch
from framework.exceptions import StreamTimeout

__all__ = ["send"]

#: Seconds between two progress refreshes and two looks at the transfer thread.
REFRESH = 0.1
#: Longest wait (s) after Ctrl-C for the cancellation to reach Redis (or --timeout).
CANCEL_GRACE = 10.0


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
        number, unit = (text[:-1], text[-1]) if text[-1:] in ("K", "M", "G") else (text, "")
        try:
            rate = int(float(number) * self._UNITS[unit])
        except (ValueError, OverflowError):  # "", "M", "inf", "nan"
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


@dataclass(frozen=True)
class _Sending:
    """One file on its way: its state key, future and progress bar."""

    offer: FileOffer
    key: str
    future: StreamFuture
    task: TaskID


class _Cancelled(Exception):
    """Ctrl-C reached the transfer thread, which then leaves its cell (cancelling)."""


class _SendJob:
    """Starts the transfers and waits for them, in the thread ``fw-cli-send``.

    Args:
        url: The Redis URL.
        offers: The files.
        targets: The receiving cells.
        timeout: ``--timeout``: the cell's idle timeout.
        rate: ``--limit-rate`` in bytes per second, or ``None``.
        state: Where unfinished sends are remembered.
        bars: Progress bars (rich's are safe to update from this thread).

    Attributes:
        sending: The transfers started so far.
        error: What ended the thread early, for the command's thread to raise.
        cancel: Set by the command's thread on Ctrl-C.
        finished: Set when the thread is done.
    """

    def __init__(
        self,
        url: str,
        offers: list[FileOffer],
        targets: tuple[str, ...],
        timeout: float,
        rate: int | None,
        state: SendState,
        bars: Bars,
    ) -> None:
        self.url, self.offers, self.targets = url, offers, targets
        self.timeout, self.rate, self.state, self.bars = timeout, rate, state, bars
        self.sending: list[_Sending] = []
        #: Files an interrupted run of this command delivered already (not sent again).
        self.earlier: list[FileOffer] = []
        #: The state key of every file, sent or not.
        self.keys: list[str] = []
        self.error: BaseException | None = None
        self.cancel = threading.Event()
        # Waited on instead of Thread.join: on Python 3.11 a Ctrl-C that interrupts
        # join() leaves the thread looking finished, and the cancellation unwaited for.
        self.finished = threading.Event()
        # A daemon: a thread stuck on a frozen Redis must not keep the process alive.
        self.thread = threading.Thread(target=self._run, name="fw-cli-send", daemon=True)

    def _run(self) -> None:
        try:
            self._send()
        except BaseException as exc:  # noqa: BLE001 - handed to the command's thread to raise
            self.error = exc
        finally:
            self.finished.set()

    def _send(self) -> None:
        name = f"send-{socket.gethostname()}-{os.getpid()}"
        with (
            connect(self.url) as conn,
            StreamCell(conn, name, config=_cell_config(self.timeout)) as cell,
        ):
            try:
                for offer in self.offers:
                    self._check_cancel()
                    self._start(conn.url(), conn.keys.prefix, cell, offer)
                self._wait()
            except BaseException:
                # Leaving the cell cancels every unfinished transfer: none can resume,
                # and the same command run again sends every file afresh.
                for key in self.keys:
                    self.state.forget(key)
                raise

    def _start(self, location: str, prefix: str, cell: StreamCell, offer: FileOffer) -> None:
        key = self.state.key(f"{location} {prefix}", offer, self.targets)
        if self.state.delivered(key):
            self.earlier.append(offer)
            self.keys.append(key)
            return
        future, resumed = start_send(cell, offer, self.targets, self.state, key, self.rate)
        self.keys.append(key)
        label = f"{'resume ' if resumed else ''}{offer.name} -> {', '.join(self.targets)}"
        task = self.bars.add_file(visible(label), offer.size)
        self.sending.append(_Sending(offer, key, future, task))

    def _wait(self) -> None:
        running = self.sending
        while running:
            self._check_cancel()
            still = []
            for s in running:
                if s.future.done():
                    self._finished(s)
                else:
                    self.bars.update(s.task, completed=s.future.get_progress())
                    still.append(s)
            running = still
            if running:
                self.cancel.wait(REFRESH)

    def _finished(self, sending: _Sending) -> None:
        if sending.future.exception(timeout=0) is None:
            # Killed before the others are through, the command run again skips it.
            self.state.mark_delivered(sending.key, sending.future.get_stream_id())
            self.bars.update(sending.task, completed=sending.offer.size)
        self.bars.finish(sending.task)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise _Cancelled


def _supervise(job: _SendJob, watch: RedisWatch) -> None:
    """Run ``job`` to its end, unless Redis stays silent for the timeout or Ctrl-C comes.

    Raises:
        BackendTimeout: Redis did not answer for ``--timeout`` seconds (the transfers
            are left to resume; the job's thread is abandoned).
        KeyboardInterrupt: Ctrl-C, once the cancellation reached Redis or the grace ran out.
        BaseException: Whatever ended the job's thread early.
    """
    job.thread.start()
    try:
        while not job.finished.wait(REFRESH):
            if watch.silent_for() > job.timeout:
                raise watch.error("Run the same command again to resume the transfers.")
    except KeyboardInterrupt:
        job.cancel.set()
        job.finished.wait(min(CANCEL_GRACE, job.timeout))
        raise
    if job.error is not None:
        raise job.error


def _failure(sending: _Sending, targets: tuple[str, ...], timeout: float) -> str | None:
    exc = sending.future.exception(timeout=0)
    if exc is None:
        return None
    name = visible(sending.offer.name)
    if isinstance(exc, StreamTimeout) or isinstance(exc.__cause__, StreamTimeout):
        return (
            f"{name}: no receiver among {visible(', '.join(targets))} made progress within "
            f"{timeout:g} s; is `framework recv --as <cell>` running against this Redis?"
        )
    hint = ""
    if "OutOfMemoryError" in str(exc) or "maxmemory" in str(exc):
        hint = (
            " Redis is full: raise its maxmemory, or pass --limit-rate so that the file "
            "goes in no faster than the receivers take it out."
        )
    return f"{name}: {type(exc).__name__}: {visible(exc)}{hint}"


def _regular_files(_: click.Context, param: click.Parameter, paths: tuple[Path, ...]) -> Any:
    """Refuse pipes, devices and sockets: a file is read twice (hashed, then sent).

    A FIFO blocked the command before any transfer, and ``/dev/zero`` was hashed forever.
    """
    for path in paths:
        if not stat.S_ISREG(path.stat().st_mode):
            raise click.BadParameter(
                f"{visible(str(path))} is not a regular file (a pipe, device or socket): "
                "send reads a file twice, to hash it and to send it; save it to a file first.",
                param=param,
            )
    return paths


def _once(paths: tuple[Path, ...]) -> list[Path]:
    """``paths`` without repeats of one file (one transfer each: a second would resume it)."""
    seen: dict[str, Path] = {}
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            console.print(f"Note: {shown(str(path))} is given more than once; it is sent once.")
        else:
            seen[real] = path
    return list(seen.values())


def _note_duplicates(offers: list[FileOffer]) -> None:
    """Say up front that files sharing a name arrive under numbered names."""
    for name, count in Counter(offer.name for offer in offers).items():
        if count > 1:
            console.print(
                f"Note: {count} files are named {shown(repr(name))}; receivers keep each "
                f"one (once if their contents are the same), the later ones under free "
                f"names such as {shown(repr(numbered(name, 1)))}."
            )


def _report(job: _SendJob) -> None:
    for offer in job.earlier:
        console.print(
            f"Sent {shown(offer.name)} ({offer.size:,} bytes, SHA-256 {offer.sha256[:16]}…) "
            "by the interrupted run of this command"
        )
    for key in job.keys:  # the command is through: run again, it sends every file again
        job.state.forget(key)
    failures = []
    for sending in job.sending:
        problem = _failure(sending, job.targets, job.timeout)
        if problem:
            failures.append(problem)
        else:
            offer = sending.offer
            console.print(
                f"Sent {shown(offer.name)} ({offer.size:,} bytes, SHA-256 {offer.sha256[:16]}…)"
            )
    if len(failures) == 1:
        raise click.ClickException(failures[0])
    if failures:
        for problem in failures:
            echo_problem(f"Failed: {problem}")
        raise click.ClickException(
            # A file may have reached some targets: each line above says which.
            f"{len(failures)} of {len(job.offers)} files did not reach every target."
        )


@click.command()
@url_option
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    callback=_regular_files,
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
    type=TIMEOUT,
    default=60.0,
    show_default=True,
    help="Seconds without progress from the receivers (for instance a target "
    "that was never started), or without an answer from Redis, before giving up.",
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
    checks its SHA-256. If the sender is killed, or Redis stops answering for the
    timeout, run the same command again: it resumes after the last chunk in Redis.
    Ctrl-C cancels the transfers instead (receivers drop their partial files), and the
    same command then sends the files afresh. Receivers never replace a file: a name
    already taken gets a number, as in `NAME (1).EXT`.
    """
    url = require_url(url, "send")
    settings = cli_settings(url)
    offers = [FileOffer.of(path) for path in _once(paths)]
    _note_duplicates(offers)
    with RedisWatch(settings, timeout) as watch:
        watch.check()  # before the bars: a Redis that cannot be reached leaves stdout empty
        with transfer_bars() as bars:
            job = _SendJob(url, offers, targets, timeout, rate, SendState(state_dir), bars)
            _supervise(job, watch)
    _report(job)

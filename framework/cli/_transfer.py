"""Files over byte streams: what ``framework send`` and ``framework recv`` do, without UI.

A file travels as one :class:`~framework.cell.StreamCell` stream on channel
:data:`CHANNEL`, topic :data:`TOPIC`, to one or several cells (the data goes into
Redis once). Its headers carry the file's name, size and SHA-256.

* **Resume.** The sender remembers the stream id of every unfinished send in a small
  state file (keyed by Redis location, path, size, modification time and targets); run
  the same command again and it continues the transfer after the last frame in Redis
  (:meth:`StreamCell.resume_send`). A receiver restarted under the same cell name
  continues every unfinished stream from its last acknowledged offset.
* **Atomic writes.** The receiver writes ``.<name>.<stream id>.part`` in the output
  directory, checks the SHA-256 of the whole file, fsyncs it and only then renames it
  to ``<name>``; a file with the final name is always complete and verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from framework.cell import FileStream, Message, Stream, StreamCell, StreamFuture
from framework.exceptions import ChecksumError, StreamError

__all__ = [
    "CHANNEL",
    "TOPIC",
    "FileOffer",
    "FileReceiver",
    "RateLimited",
    "SendState",
    "start_send",
]

#: Channel and topic of file transfers.
CHANNEL, TOPIC = "framework.files", "file"
#: Bytes read per call, from a file or from a stream.
READ_SIZE = 1 << 20


@dataclass(frozen=True)
class FileOffer:
    """A file about to be sent: where it is and what the receiver must verify.

    Attributes:
        path: The file.
        name: The name it gets at the receiver (the path's last component).
        size: Bytes.
        sha256: Hex SHA-256 of the content.
        mtime_ns: Modification time, part of the resume key.
    """

    path: Path
    name: str
    size: int
    sha256: str
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> FileOffer:
        """Hash ``path`` and describe it.

        Raises:
            OSError: If the file cannot be read.
        """
        hasher = hashlib.sha256()
        with path.open("rb") as file:
            while block := file.read(READ_SIZE):
                hasher.update(block)
        stat = path.stat()
        return cls(path, path.name, stat.st_size, hasher.hexdigest(), stat.st_mtime_ns)

    def headers(self) -> dict[str, Any]:
        """The stream headers the receiver reads."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


class SendState:
    """Stream ids of unfinished sends, one small JSON file each, for resuming.

    Args:
        directory: Where the state files live (created on first save).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, location: str, offer: FileOffer, targets: Sequence[str]) -> str:
        """A key naming this send: same Redis, file and targets give the same key."""
        what = [location, str(offer.path.resolve()), offer.size, offer.mtime_ns, sorted(targets)]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]

    def load(self, key: str) -> int | None:
        """The stream id saved under ``key``, if any."""
        try:
            return int(json.loads((self.directory / f"{key}.json").read_text())["sid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, key: str, sid: int) -> None:
        """Remember ``sid`` under ``key`` (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"sid": sid}))
        tmp.replace(self.directory / f"{key}.json")

    def forget(self, key: str) -> None:
        """Drop the entry for ``key`` (the send finished or cannot resume)."""
        (self.directory / f"{key}.json").unlink(missing_ok=True)


class RateLimited(Stream):
    """A stream that reads its source no faster than ``rate`` bytes per second.

    Args:
        source: The stream to read (seeks and closes pass through).
        rate: Bytes per second.
    """

    def __init__(self, source: Stream, rate: int) -> None:
        super().__init__(source.get_size(), source.get_headers())
        self._source, self._rate = source, rate
        self._started, self._read = time.monotonic(), 0

    def read(self, size: int) -> Any:
        """Read at most a tenth of a second's worth, sleeping to keep to the rate."""
        data = self._source.read(max(1, min(size, self._rate // 10)))
        self._read += len(data)
        ahead = self._read / self._rate - (time.monotonic() - self._started)
        if ahead > 0:
            time.sleep(ahead)
        self.pos = self._source.get_pos()
        return data

    def seek(self, offset: int) -> None:
        """Seek the source (a resumed send restarts the rate clock)."""
        self._source.seek(offset)
        self.pos = offset
        self._started, self._read = time.monotonic(), 0

    def close(self) -> None:
        """Close the source."""
        self._source.close()


def _source(offer: FileOffer, rate: int | None) -> Stream:
    stream = FileStream(offer.path)
    return RateLimited(stream, rate) if rate else stream


def start_send(
    cell: StreamCell,
    offer: FileOffer,
    targets: Sequence[str],
    state: SendState,
    key: str,
    rate: int | None = None,
) -> tuple[StreamFuture, bool]:
    """Resume the unfinished send saved under ``key``, or start a new one.

    Args:
        cell: The sending cell.
        offer: The file.
        targets: Receiving cells.
        state: Where unfinished sends are remembered.
        key: This send's key in ``state``.
        rate: Upper bound on bytes read per second, or ``None``.

    Returns:
        The transfer's future, and whether it resumed an earlier one.

    Raises:
        StreamError: If the file cannot be announced.
        BackendError: If Redis fails.
    """
    sid = state.load(key)
    if sid is not None:
        try:
            return cell.resume_send(sid, Message({}, _source(offer, rate))), True
        except StreamError:
            state.forget(key)  # finished, failed or expired: send it again from the start
    message = Message(offer.headers(), _source(offer, rate))
    future = cell.send_stream(CHANNEL, TOPIC, list(targets), message)
    state.save(key, future.get_stream_id())
    return future, False


def safe_name(name: object) -> str:
    """The last path component of a received name; refuses names that escape the directory.

    Raises:
        StreamError: If nothing usable remains.
    """
    base = PurePosixPath(str(name)).name if isinstance(name, str) else ""
    if base in ("", ".", "..") or "\x00" in base or "\\" in base:
        raise StreamError(f"Refusing to write a file named {name!r}.")
    return base


#: ``on_event(kind, name, done, total)`` with kind "start", "progress", "done" or "error".
Events = Callable[[str, str, int, int], None]


class FileReceiver:
    """The ``stream_cb`` of ``framework recv``: writes, verifies and renames each file.

    Args:
        out_dir: Where files land.
        on_event: Progress and outcome reports (called from receiver threads).
    """

    def __init__(self, out_dir: Path, on_event: Events) -> None:
        self.out_dir = out_dir
        self.on_event = on_event
        self.finished = 0
        self.failed = 0
        self.changed = threading.Condition()

    def __call__(self, future: StreamFuture, stream: Stream, resume_offset: int) -> None:
        """Receive one file (runs in the stream's own thread); errors reach the sender."""
        headers = future.get_headers() or {}
        name = str(headers.get("name"))
        try:
            final = self._receive(future.get_stream_id(), headers, stream, resume_offset)
        except BaseException as exc:
            self.on_event("error", f"{name}: {type(exc).__name__}: {exc}", 0, 0)
            self._count(failed=True)
            raise
        self.on_event("done", str(final), 0, 0)
        self._count(failed=False)

    def _count(self, *, failed: bool) -> None:
        with self.changed:
            self.failed += failed
            self.finished += not failed
            self.changed.notify_all()

    def _receive(
        self, sid: int, headers: dict[str, Any], stream: Stream, resume_offset: int
    ) -> Path:
        name, size = safe_name(headers.get("name")), int(headers.get("size", -1))
        part = self.out_dir / f".{name}.{sid}.part"
        hasher = hashlib.sha256()
        with part.open("r+b" if resume_offset else "wb") as file:
            if resume_offset:
                _rehash(file, hasher, resume_offset, part)
            self.on_event("start", name, resume_offset, size)
            done = resume_offset
            while chunk := stream.read(READ_SIZE):
                file.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                self.on_event("progress", name, done, size)
            file.flush()
            os.fsync(file.fileno())
        if hasher.hexdigest() != headers.get("sha256"):
            part.unlink(missing_ok=True)
            raise ChecksumError(
                f"{name}: the received bytes' SHA-256 differs from the sender's; "
                "the partial file was removed."
            )
        final = self.out_dir / name
        os.replace(part, final)
        return final


def _rehash(file: Any, hasher: Any, upto: int, part: Path) -> None:
    """Hash the first ``upto`` bytes already on disk and cut the file there."""
    remaining = upto
    while remaining:
        block = file.read(min(READ_SIZE, remaining))
        if not block:
            raise StreamError(
                f"{part} holds fewer bytes than were acknowledged ({upto}); delete it and "
                "send the file again."
            )
        hasher.update(block)
        remaining -= len(block)
    file.truncate(upto)
    file.seek(upto)

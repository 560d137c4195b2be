r"""Files over byte streams: the protocol and what ``framework send`` does, without UI.

A file travels as one :class:`~framework.cell.StreamCell` stream on channel
:data:`CHANNEL`, topic :data:`TOPIC`, to one or several cells (the data goes into
Redis once). Its headers carry the file's name, size and SHA-256. The receiving side
is :mod:`framework.cli._receiving`.

* **Names.** A POSIX file name is any bytes but ``/`` and NUL, not necessarily UTF-8
  (``caf\xe9.txt`` from a Latin-1 system); JSON headers hold text only. Such a name
  travels as the base64 of its bytes in :data:`NAME_BYTES`, beside a readable ``name``
  (the undecodable bytes replaced by U+FFFD, which a receiver that does not know
  :data:`NAME_BYTES` uses), and arrives byte for byte (see :func:`file_name`).

* **Resume.** The sender remembers the stream id of every unfinished send in a small
  state file (keyed by Redis location, path, size, modification time, SHA-256 and targets); run
  the same command again and it continues the transfer after the last frame in Redis
  (:meth:`StreamCell.resume_send`). A transfer that was cancelled or failed is never
  resumed: the same command then starts it afresh. A receiver restarted under the same
  cell name continues every unfinished stream from its last acknowledged offset.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.cell import FileStream, Message, Stream, StreamCell, StreamFuture
from framework.exceptions import StreamError

__all__ = [
    "CHANNEL",
    "NAME_BYTES",
    "READ_SIZE",
    "TOPIC",
    "FileOffer",
    "RateLimited",
    "SendState",
    "file_name",
    "start_send",
]

#: Channel and topic of file transfers.
CHANNEL, TOPIC = "framework.files", "file"
#: Bytes read per call, from a file or from a stream.
READ_SIZE = 1 << 20
#: Header with the base64 of a file name's bytes, for a name that is not UTF-8.
NAME_BYTES = "name_b64"


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
        hasher, size = hashlib.sha256(), 0
        with path.open("rb") as file:
            while block := file.read(READ_SIZE):
                hasher.update(block)
                size += len(block)
        # The bytes read, not st_size: files of /proc and /sys have a size of 0.
        return cls(path, path.name, size, hasher.hexdigest(), path.stat().st_mtime_ns)

    def headers(self) -> dict[str, Any]:
        """The stream headers the receiver reads (see :func:`file_name` for the name)."""
        headers: dict[str, Any] = {"name": self.name, "size": self.size, "sha256": self.sha256}
        raw = os.fsencode(self.name)  # the bytes on disk (undecodable ones were escaped)
        try:
            raw.decode()
        except UnicodeDecodeError:
            headers["name"] = raw.decode(errors="replace")
            headers[NAME_BYTES] = base64.b64encode(raw).decode("ascii")
        return headers


def file_name(headers: dict[str, Any]) -> object:
    """The name a file was sent under, as the sender's :meth:`FileOffer.headers` gave it.

    A name that is not UTF-8 comes back with its undecodable bytes escaped as
    :func:`os.fsdecode` does, so that it is written to disk byte for byte.

    Returns:
        The name, or whatever a foreign sender put in ``name`` (not necessarily a str;
        the receiver checks it).

    Raises:
        StreamError: If :data:`NAME_BYTES` is there but not base64.
    """
    encoded = headers.get(NAME_BYTES)
    if encoded is None:
        return headers.get("name")
    try:
        return os.fsdecode(base64.b64decode(str(encoded), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise StreamError(f"The file name's bytes ({NAME_BYTES}) are not base64.") from exc


class SendState:
    """Stream ids of unfinished sends, one small JSON file each, for resuming.

    A file delivered while other files of the same command were still on their way is
    marked delivered until the command ends: killed and run again, the command does not
    send it a second time.

    Args:
        directory: Where the state files live (created on first save).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def key(self, location: str, offer: FileOffer, targets: Sequence[str]) -> str:
        """A key naming this send: same Redis, file, content and targets give the same key.

        The content's hash is part of it: a file changed in place with its size and
        modification time kept (``cp -p``) must not resume the old content's transfer.
        """
        where = str(offer.path.resolve())
        what = [location, where, offer.size, offer.mtime_ns, offer.sha256, sorted(targets)]
        return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:32]

    def load(self, key: str) -> int | None:
        """The stream id saved under ``key``, if any."""
        try:
            return int(self._read(key)["sid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def delivered(self, key: str) -> bool:
        """Whether the send saved under ``key`` was delivered (see :meth:`mark_delivered`)."""
        try:
            return self._read(key).get("delivered") is True
        except (OSError, ValueError, AttributeError):
            return False

    def save(self, key: str, sid: int, *, delivered: bool = False) -> None:
        """Remember ``sid`` under ``key`` (atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"sid": sid, "delivered": delivered}))
        tmp.replace(self.directory / f"{key}.json")

    def mark_delivered(self, key: str, sid: int) -> None:
        """Remember that the send ``sid`` under ``key`` was delivered."""
        self.save(key, sid, delivered=True)

    def _read(self, key: str) -> Any:
        return json.loads((self.directory / f"{key}.json").read_text())

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
        source = _source(offer, rate)
        try:
            return cell.resume_send(sid, Message({}, source)), True
        except StreamError:
            # Finished, cancelled (Ctrl-C), failed or expired: send it again from the start.
            source.close()
            state.forget(key)
    message = Message(offer.headers(), _source(offer, rate))
    future = cell.send_stream(CHANNEL, TOPIC, list(targets), message)
    state.save(key, future.get_stream_id())
    return future, False

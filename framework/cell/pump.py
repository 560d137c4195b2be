"""Reading a sender's source: cut into chunks, and never block the sender on a slow source.

A live source (a pipe, a generator fed by another thread) may take seconds per read. If
the sending thread itself waited inside ``read()``, it could neither write what it has
(latency would grow with the batch size) nor tell receivers it is alive (their idle
timeout would measure the data rate). So :class:`SourcePump` reads the source in a
thread of its own, ``fw-cell-src-<sid>``, and the sender waits on it with a timeout: the
linger (to write a short chunk) or the heartbeat interval. In-memory sources never
block and are read inline (:class:`DirectPump`). :class:`Chunker` is the pure cutting
logic. This module does no Redis I/O.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Final

from framework.buffers import byte_view
from framework.cell.streams import BytesStream
from framework.cell.types import Stream
from framework.exceptions import StreamError

__all__ = ["EOF", "Chunker", "DirectPump", "SourcePump", "make_pump"]

logger = logging.getLogger(__name__)

#: What a pump returns once the source is exhausted.
EOF: Final = object()
#: Reads a pump may hold ahead of the sender.
_DEPTH = 4
#: Seconds between stop checks of a pump thread waiting for the sender to take a read.
_PUT_WAIT = 0.1

Chunk = tuple[Any, bool]


class Chunker:
    """Cuts pieces of any size into chunks of ``chunk_size`` bytes, in order.

    Full-size pieces pass through without a copy; smaller ones are coalesced. The newest
    complete chunk is held back until more data or the end shows whether it is the last.

    Args:
        chunk_size: Bytes per chunk.
    """

    def __init__(self, chunk_size: int) -> None:
        self.size = chunk_size
        self._parts: list[bytes] = []
        self._fill = 0
        self._held: Any = None

    @property
    def buffered(self) -> int:
        """Bytes taken in but not yet handed out."""
        return self._fill + (0 if self._held is None else len(self._held))

    def feed(self, data: Any) -> list[Chunk]:
        """Take ``data``; returns the chunks now known not to be the last."""
        out: list[Chunk] = []
        view = data if isinstance(data, bytes) else byte_view(data)
        while len(view):
            if not self._parts and len(view) >= self.size:
                whole = len(view) == self.size  # the usual case: hand the read itself on
                self._complete(view if whole else view[: self.size], out)
                view = view[self.size :]
                continue
            piece = view[: self.size - self._fill]
            # A copy: the source may reuse its buffer before the chunk is complete.
            self._parts.append(bytes(piece))
            self._fill += len(piece)
            view = view[len(piece) :]
            if self._fill == self.size:
                self._complete(b"".join(self._parts), out)
                self._parts, self._fill = [], 0
        return out

    def flush(self) -> list[Chunk]:
        """Hand out everything buffered now, as chunks that are not the last."""
        out = [] if self._held is None else [(self._held, False)]
        if self._parts:
            out.append((b"".join(self._parts), False))
        self._held, self._parts, self._fill = None, [], 0
        return out

    def finish(self) -> list[Chunk]:
        """The source ended: hand out the rest; the final chunk is marked last.

        When everything was already handed out, the last chunk is empty.
        """
        out = self.flush()
        if not out:
            return [(b"", True)]
        out[-1] = (out[-1][0], True)
        return out

    def _complete(self, chunk: Any, out: list[Chunk]) -> None:
        if self._held is not None:
            out.append((self._held, False))
        self._held = chunk


class DirectPump:
    """Reads an in-memory source inline (it never blocks)."""

    def __init__(self, source: Stream, read_size: int) -> None:
        self.source = source
        self.read_size = read_size
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        """Nothing to start."""

    def get(self, timeout: float) -> Any:
        """The next read (at most ``read_size`` bytes), or :data:`EOF`."""
        data = _checked(self.source.read(self.read_size), self.read_size)
        return data if len(data) else EOF

    def close(self) -> None:
        """Close the source."""
        _close(self.source)


class SourcePump:
    """Reads a source in its own thread; the sender takes reads with a timeout.

    Args:
        source: The stream to read.
        read_size: Bytes asked for per read.
        name: Thread name.
    """

    def __init__(self, source: Stream, read_size: int, name: str) -> None:
        self.source = source
        self.read_size = read_size
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_DEPTH)
        self._stop = threading.Event()
        self.thread: threading.Thread | None = threading.Thread(
            target=self._run, name=name, daemon=True
        )

    def start(self) -> None:
        """Start reading."""
        assert self.thread is not None
        self.thread.start()

    def get(self, timeout: float) -> Any:
        """The next read, :data:`EOF`, or None if nothing arrived within ``timeout`` s.

        Raises:
            Exception: Whatever the source's ``read`` raised.
        """
        try:
            kind, value = self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """Stop reading; the thread closes the source when its current read returns."""
        self._stop.set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = _owned(_checked(self.source.read(self.read_size), self.read_size))
                if not self._put(("data", data) if len(data) else ("data", EOF)):
                    return
                if not len(data):
                    return
        except Exception as exc:  # noqa: BLE001 - handed to the sender, which fails with it
            self._put(("error", exc))
        finally:
            _close(self.source)

    def _put(self, item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_PUT_WAIT)
                return True
            except queue.Full:
                continue
        return False


def make_pump(source: Stream, read_size: int, name: str) -> DirectPump | SourcePump:
    """A pump for ``source``: inline for in-memory data, a reading thread otherwise."""
    if isinstance(source, BytesStream):
        return DirectPump(source, read_size)
    return SourcePump(source, read_size, name)


def _checked(data: Any, size: int) -> Any:
    """A read as bytes or a flat byte view, at most ``size`` bytes long."""
    if data is None:  # NVFlare takes any empty value for the end of a stream
        return b""
    try:
        # NVFlare's BytesAlike also allows a list (of byte values).
        view = data if isinstance(data, bytes) else byte_view(_listed(data))
    except (TypeError, ValueError) as exc:
        raise StreamError(
            f"A stream's read() returned a {type(data).__name__}; it must return bytes-like "
            f"data ({exc})."
        ) from exc
    if len(view) > size:
        raise StreamError(
            f"A stream returned {len(view)} bytes when at most {size} were asked for."
        )
    return view


def _listed(data: Any) -> Any:
    return bytes(data) if isinstance(data, list) else data


def _owned(data: Any) -> Any:
    """``data``, or a copy when the source could change it after ``read()`` returned.

    A read stays in use long after the next ``read()`` call: queued ahead here, in the
    chunk being filled, in the window until acknowledged. A source that refills one
    buffer (``readinto``) is a legitimate source, so only immutable bytes are kept
    as they are.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, memoryview) and isinstance(data.obj, bytes):
        return data
    return bytes(data)


def _close(source: Stream) -> None:
    try:
        source.close()
    except Exception:  # the transfer's outcome does not depend on it
        logger.warning("Closing a stream source failed.", exc_info=True)

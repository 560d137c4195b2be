"""The reader's side of a stream transfer: the :class:`RxStream` a stream callback reads.

:class:`~framework.cell.receiver.RxTransfer` fetches, verifies and acknowledges chunks;
:class:`RxStream` hands them to the application as a
:class:`~framework.cell.types.Stream`, fetching on demand in the reading thread, and
:class:`RxHandle` lets the receiver's future cancel the transfer by closing that stream.
Both are re-exported by :mod:`framework.cell.receiver`.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from framework.cell.frames import ChunkHeader
from framework.cell.types import Stream, StreamFuture, StreamTaskSpec
from framework.cell.window import Position
from framework.exceptions import FrameworkError, StreamCancelled

if TYPE_CHECKING:
    from framework.cell.receiver import RxTransfer

__all__ = ["RxHandle", "RxStream"]


class RxStream(Stream):
    """The stream a stream callback reads; chunks are fetched in the reading thread.

    ``read`` returns whole chunks without copying when ``size`` allows. Closing the
    stream before its end tells the sender, whose future fails with ``StreamCancelled``.
    ``closed`` (NVFlare's attribute) turns True once the stream is closed or finished.

    Args:
        rx: The receiver's transfer.
        future: The receiver's future (progress, result, failure).
    """

    def __init__(self, rx: RxTransfer, future: StreamFuture) -> None:
        super().__init__(size=rx.announce.size, headers=rx.announce.headers)
        self.rx = rx
        self.future = future
        self.pos = rx.decoder.offset
        self._chunks: deque[tuple[ChunkHeader, bytes]] = deque()
        self._used = 0  # bytes of the first queued chunk already returned
        self._lock = threading.Lock()

    def read(self, size: int) -> bytes:
        """Return up to ``size`` bytes; empty at the end of the stream.

        Raises:
            ValueError: If ``size`` is below 1 (an empty read means the end).
            StreamError: The transfer failed, was cancelled by the sender or closed here.
            ClosedError: The owning cell is closing.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"read() of {self.rx.name} needs a size of at least 1 byte, not {size!r}: "
                "an empty read means the end of the stream."
            )
        with self._lock:
            self._check_failed()
            if not self._fill():
                return b""
            return self._take(size)

    def close(self) -> None:
        """Stop reading; before the end this cancels the transfer for the sender too."""
        self.closed = True
        if self.rx.ended or self._all_read():
            return
        self.fail(
            StreamCancelled(f"The receiver closed {self.rx.name} after {self.pos} bytes."),
            closed=True,
        )

    def fail(self, exc: BaseException, closed: bool = False) -> None:
        """End the transfer with ``exc`` (reported to the sender unless it came from there)."""
        self.rx.fail(exc, closed, at=self.pos)
        self.future.set_exception(exc)

    def finish(self) -> None:
        """After the callback returned: acknowledge the end, or tell the sender it stopped."""
        with self._lock:
            done = not self.rx.ended and self._read_to_end()
        if not done:
            self.close()
            return
        self.closed = True
        try:
            self.rx.complete()
        except FrameworkError as exc:
            self.fail(exc)
            return
        self.future.set_result(self.pos)

    def _all_read(self) -> bool:
        return self.rx.decoder.finished and not self._chunks

    def _read_to_end(self) -> bool:
        """True when every byte was read, after fetching a trailing empty last chunk."""
        if self.size and self.pos == self.size and not self.rx.decoder.finished:
            try:
                self._fill()
            except FrameworkError:
                return False  # already reported by _fill
        return self._all_read()

    def _fill(self) -> bool:
        """Make sure a chunk is queued; False at the end of the stream."""
        while not self._chunks:
            if self.rx.decoder.finished:
                return False
            self._check_failed()  # closed or cancelled from another thread meanwhile
            try:
                chunks = self.rx.fetch()
            except FrameworkError as exc:
                self.fail(exc)
                raise
            self._chunks.extend(chunks)
            self._settle_empty()
        return True

    def _check_failed(self) -> None:
        exc = self.future.exception(0) if self.future.done() else None
        if exc is not None:
            raise exc

    def _take(self, size: int) -> bytes:
        header, data = self._chunks[0]
        # A whole chunk is handed over as the object itself, without a copy.
        whole = self._used == 0 and len(data) <= size
        out = data if whole else data[self._used : self._used + size]
        self._used += len(out)
        self.pos += len(out)
        self.future.set_progress(self.pos)
        if self._used >= len(data):
            self._chunks.popleft()
            self._used = 0
            self._consumed(header)
        self._settle_empty()
        return out

    def _settle_empty(self) -> None:
        # Empty chunks (an empty stream's only chunk) are consumed without a read.
        while self._chunks and len(self._chunks[0][1]) == 0:
            self._consumed(self._chunks.popleft()[0])

    def _consumed(self, header: ChunkHeader) -> None:
        try:
            self.rx.consumed(Position(header.seq, header.off + header.len), header.last)
        except FrameworkError as exc:
            self.fail(exc)
            raise
        if header.last:
            self.future.set_result(self.pos)


class RxHandle(StreamTaskSpec):
    """Lets the receiver's future cancel the transfer by closing its stream."""

    def __init__(self, stream: RxStream | None = None) -> None:
        self.stream = stream

    def cancel(self) -> None:
        """Close the stream (the sender is told)."""
        if self.stream is not None:
            self.stream.close()

"""The receiving side of one transfer: verified chunk fetching, acks, and the reader stream.

:class:`RxTransfer` pulls chunk frames and sender controls with one ``XREAD`` over the
data and ack streams, verifies every chunk and acknowledges consumption every
``ack_interval`` bytes (and at the end); its position is also kept in the transfer's
meta hash so a restarted cell resumes from it. :class:`RxStream` is the
:class:`~framework.cell.types.Stream` handed to stream callbacks: it fetches on demand
in the reading thread, so memory stays bounded by one ``XREAD`` batch.
:func:`receive_blob` copies chunks straight into the preallocated blob.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from framework.cell.assembler import BlobBuffer, ChunkDecoder
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce, ChunkHeader, Control, error_from_wire
from framework.cell.transport import TransferIO
from framework.cell.types import Stream, StreamFuture, StreamTaskSpec
from framework.cell.window import Position
from framework.exceptions import (
    BlobSizeError,
    ClosedError,
    FrameworkError,
    StreamCancelled,
    StreamError,
    StreamTimeout,
)

__all__ = ["RxHandle", "RxStream", "RxTransfer", "receive_blob"]

logger = logging.getLogger(__name__)


class RxTransfer:
    """One receiver's view of a transfer: fetch, verify, acknowledge, report.

    Args:
        io: Redis side of the transfer.
        announce: The transfer as announced.
        me: This receiver's cell name.
        config: This receiver's ack interval, read count and idle timeout.
        cipher: Opens chunks of a secure transfer.
        start: Position already consumed (resume), else nothing.
        stopping: Set when the owning cell closes; the transfer is then abandoned,
            not failed, so a cell with the same name can resume it.
    """

    def __init__(
        self,
        io: TransferIO,
        announce: Announce,
        me: str,
        config: CellConfig,
        cipher: ChunkCipher | None,
        start: Position,
        stopping: threading.Event,
    ) -> None:
        self.io = io
        self.announce = announce
        self.me = me
        self.config = config
        self.stopping = stopping
        self.decoder = ChunkDecoder(announce.sid, start, announce.size, cipher)
        self.acked = start
        self.ended = False
        self.abandoned = False
        self._remote_ended = False
        self._unsent: Control | None = None
        self._data_from = f"{start.seq + 1}-0"
        self._ack_from = "0-0"
        self._last_progress = time.monotonic()

    @property
    def sid(self) -> int:
        """The stream id."""
        return self.announce.sid

    def fetch(self) -> list[tuple[ChunkHeader, bytes]]:
        """Wait for the next verified chunks (plain bytes, in order).

        Raises:
            StreamCancelled: The sender cancelled the transfer.
            StreamTimeout: No chunk arrived within the idle timeout.
            ClosedError: The owning cell is closing.
            StreamError: The sender failed, or a chunk failed verification (a
                ``FramingError`` or ``EncryptionError`` then explains why).
        """
        while True:
            if self.stopping.is_set():
                self.abandoned = True
                raise ClosedError(
                    f"The cell {self.me!r} closed while receiving stream {self.sid}; "
                    "it can resume later."
                )
            frames, controls = self.io.read(
                self._data_from, self._ack_from, self.config.read_count, self._unsent
            )
            self._unsent = None
            self._apply(controls)
            out = []
            for eid, frame in frames:
                self._data_from = eid.decode()
                plain = self.decoder.accept(frame.header, frame.data)
                if plain is not None:
                    out.append((frame.header, plain))
            if out:
                self._last_progress = time.monotonic()
                return out
            self._check_idle()

    def consumed(self, position: Position, last: bool) -> None:
        """Record consumption; acknowledges every ``ack_interval`` bytes and at the end.

        The final ack is posted at once; the others ride along with the next ``fetch``
        (one round trip instead of two), so they are sent when more data is wanted.
        A pending ack keeps moving to the latest consumed position, so the sender's
        window reopens as far as it can and no extra ack is needed.
        """
        due = position.off - self.acked.off >= self.config.ack_interval
        if not (last or due or self._unsent is not None):
            return
        ack = Control(
            kind="ack", role="rx", sender=self.me, seq=position.seq, off=position.off, done=last
        )
        self.acked = position
        if last:
            self.io.post(ack)
            self.ended = True
        else:
            self._unsent = ack

    def fail(self, exc: BaseException, closed: bool = False) -> None:
        """End the transfer on this side; the sender hears of it unless it caused it.

        Args:
            exc: Why the transfer ended.
            closed: True when the application closed the stream early.
        """
        if self.ended:
            return
        self.ended = True
        if self._remote_ended or self.abandoned:
            return
        if closed:
            control = Control(
                kind="close", role="rx", sender=self.me, off=self.acked.off, msg=str(exc)
            )
        else:
            etype = type(exc).__name__ if isinstance(exc, FrameworkError) else "StreamError"
            control = Control(
                kind="error",
                role="rx",
                sender=self.me,
                etype=etype,
                msg=f"{type(exc).__name__}: {exc}",
            )
        try:
            self.io.post(control)
        except Exception:  # best effort: the transfer already ended on this side
            logger.warning(
                "Could not tell the sender of stream %s that it ended.", self.sid, exc_info=True
            )

    def _apply(self, controls: list[tuple[bytes, Control]]) -> None:
        for eid, control in controls:
            self._ack_from = eid.decode()
            if control.role != "tx":
                continue
            where = f"The sender {control.sender!r} of stream {self.sid}"
            if control.kind == "cancel":
                self._remote_ended = True
                raise StreamCancelled(f"{where} cancelled the transfer.")
            if control.kind == "error":
                self._remote_ended = True
                raise error_from_wire(control.etype, control.msg, where)

    def _check_idle(self) -> None:
        idle = time.monotonic() - self._last_progress
        if idle > self.config.idle_timeout:
            raise StreamTimeout(
                f"Stream {self.sid}: no chunk arrived for {idle:.0f} s "
                f"(idle timeout {self.config.idle_timeout} s)."
            )


class RxStream(Stream):
    """The stream a stream callback reads; chunks are fetched in the reading thread.

    ``read`` returns whole chunks without copying when ``size`` allows. Closing the
    stream before its end tells the sender, whose future fails with ``StreamCancelled``.

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
            StreamError: The transfer failed, was cancelled by the sender or closed here.
            ClosedError: The owning cell is closing.
        """
        with self._lock:
            self._check_failed()
            if not self._fill():
                return b""
            return self._take(max(size, 1))

    def close(self) -> None:
        """Stop reading; before the end this cancels the transfer for the sender too."""
        if self.future.done():
            return
        self.fail(
            StreamCancelled(f"The receiver closed stream {self.rx.sid} after {self.pos} bytes."),
            closed=True,
        )

    def fail(self, exc: BaseException, closed: bool = False) -> None:
        """End the transfer with ``exc`` (reported to the sender unless it came from there)."""
        self.rx.fail(exc, closed)
        self.future.set_exception(exc)

    def finish(self) -> None:
        """Called after the callback returned: close early streams, settle the future."""
        if self.rx.decoder.finished and not self._chunks and self.rx.ended:
            self.future.set_result(self.pos)
        else:
            self.close()

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


def receive_blob(rx: RxTransfer, future: StreamFuture, max_size: int) -> bytearray:
    """Receive a whole blob into one preallocated buffer.

    Args:
        rx: The receiver's transfer (must start at the beginning).
        future: Receives progress updates.
        max_size: Largest blob accepted.

    Returns:
        The blob.

    Raises:
        BlobSizeError: The blob is larger than ``max_size`` (before allocating).
        StreamError: The transfer failed or cannot resume (see :meth:`RxTransfer.fetch`).
    """
    if rx.decoder.offset:
        raise StreamError(
            f"Blob stream {rx.sid} was interrupted at byte {rx.decoder.offset} by a receiver "
            "restart; a blob cannot resume at a receiver (its first part died with the old "
            "process). Send it again."
        )
    if rx.announce.mode == "stream" and not rx.announce.size:
        return _receive_unsized(rx, future, max_size)
    blob = BlobBuffer(rx.sid, rx.announce.size, max_size)
    while not rx.decoder.finished:
        for header, plain in rx.fetch():
            blob.write(header.off, plain)
            rx.consumed(Position(header.seq, header.off + header.len), header.last)
        future.set_progress(rx.decoder.offset)
    return blob.release()


def _receive_unsized(rx: RxTransfer, future: StreamFuture, max_size: int) -> bytearray:
    """A stream of unknown size read as a blob: collect chunks, join once at the end."""
    parts: list[bytes] = []
    while not rx.decoder.finished:
        for header, plain in rx.fetch():
            parts.append(plain)
            rx.consumed(Position(header.seq, header.off + header.len), header.last)
        if rx.decoder.offset > max_size:
            raise BlobSizeError(
                f"Stream {rx.sid} exceeds the {max_size} bytes a blob receiver accepts."
            )
        future.set_progress(rx.decoder.offset)
    return bytearray().join(parts)

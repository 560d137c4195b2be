"""The receiving side of one transfer: verified chunk fetching, acks, and the reader stream.

:class:`RxTransfer` pulls chunk frames and sender controls with one ``XREAD`` over the
data and ack streams, verifies every chunk and acknowledges consumption every
``ack_interval`` bytes (and at the end); its position is also kept in the transfer's
meta hash so a restarted cell resumes from it. :class:`RxStream` is the
:class:`~framework.cell.types.Stream` handed to stream callbacks (defined in
:mod:`framework.cell._rx_stream`): it fetches on demand in the reading thread, so memory
stays bounded by one ``XREAD`` batch.
The final acknowledgement waits until the application is done: the sender's future
succeeds only then, and fails with any error raised before or after the last byte.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from framework.cell._rx_stream import RxHandle, RxStream
from framework.cell.assembler import ChunkDecoder
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce, ChunkHeader, Control, error_from_wire
from framework.cell.rawread import ReadSession
from framework.cell.reconnect import with_reconnect
from framework.cell.respreader import Place
from framework.cell.transport import ControlEntry, TransferIO
from framework.cell.window import Position
from framework.exceptions import (
    ClosedError,
    FrameworkError,
    StreamCancelled,
    StreamError,
    StreamTimeout,
)

__all__ = ["RxHandle", "RxStream", "RxTransfer"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Longest time (s) spent retrying an ending notice.
_NOTICE_PATIENCE = 5.0


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
        self.name = f"stream {announce.sid} from {announce.origin!r}"
        self.decoder = ChunkDecoder(announce.sid, start, announce.size, cipher, self.name)
        self.acked = start
        self.ended = False
        self.abandoned = False
        self._remote_ended = False
        self._unsent: Control | None = None
        self._final: Control | None = None
        self._data_from = f"{start.seq + 1}-0"
        self._ack_from = "0-0"
        #: Chunks per XREAD; fan-out receivers ask for about two MiB.
        self.read_count = config.read_count_for(len(announce.targets), announce.chunk_size)
        self._last_progress = self._last_ack = time.monotonic()
        self._beat_seq = -1  # the sender's last heartbeat number
        self._own_beat = -1  # this receiver's last heartbeat number
        self._session = ReadSession(io.conn.blocking)
        self._reading = f"reading chunks of {self.name}"

    def close(self) -> None:
        """Give back the connection this transfer's reads kept (idempotent)."""
        self._session.close()

    @property
    def sid(self) -> int:
        """The stream id."""
        return self.announce.sid

    def fetch(self, place: Place | None = None) -> list[tuple[ChunkHeader, Any]]:
        """Wait for the next verified chunks (plain bytes, in order).

        A dropped connection is retried until the idle timeout; reading resumes after
        the last entry seen, so nothing is duplicated or skipped. ``place`` may pick
        where chunk bodies are read to (blob mode); every chunk is verified after.

        Raises:
            StreamCancelled: The sender cancelled the transfer.
            StreamTimeout: Neither a chunk nor a heartbeat arrived within the idle timeout.
            ClosedError: The owning cell is closing.
            FramingError: A chunk entry failed verification or decoding (which says why).
            StreamError: The sender failed (``EncryptionError`` for a bad secure chunk).
        """
        while True:
            if self.stopping.is_set():
                self.abandoned = True
                raise ClosedError(
                    f"The cell {self.me!r} closed while receiving {self.name}; it can resume later."
                )
            frames, controls = with_reconnect(
                lambda: self.io.read(
                    self._data_from,
                    self._ack_from,
                    self.read_count,
                    self._unsent,
                    place=place,
                    session=self._session,
                ),
                patience=self.config.idle_timeout,
                stop=self.stopping,
                what=self._reading,
            )
            self._unsent = None
            self._apply(controls)
            out = []
            for eid, frame in frames:
                self._data_from = eid.decode()
                plain = self.decoder.accept(frame.header, frame.data, frame.crc)
                if plain is not None:
                    out.append((frame.header, plain))
            if out:
                self._last_progress = time.monotonic()
                return out
            self._check_idle()

    def consumed(self, position: Position, last: bool) -> None:
        """Record consumption; acknowledges every ``ack_interval`` bytes or heartbeat.

        Acks ride along with the next ``fetch`` (one round trip instead of two), so they
        are sent when more data is wanted. A pending ack keeps moving to the latest
        consumed position, so the sender's window reopens as far as it can. The final
        ack waits for :meth:`complete`: the sender learns of success only once the
        application is done with the data.
        """
        if last:
            self._final = self._ack(position, done=True)
            return
        # Within the sender's window, whatever this side's setting: a sender with a
        # smaller window would otherwise wait for an ack that never comes.
        interval = min(self.config.ack_interval, max(1, self.announce.window // 2))
        due = position.off - self.acked.off >= interval
        # A slow reader still shows the sender it is alive, once per heartbeat interval.
        due = due or time.monotonic() - self._last_ack >= self.config.heartbeat
        if due or self._unsent is not None:
            self._unsent = self._ack(position)

    def beat(self) -> None:
        """Show the sender this receiver is alive while its application reads nothing.

        Called every heartbeat interval while the stream callback runs: one that works on
        the data for longer than the idle timeout (after the last byte, say) would
        otherwise leave the sender without an ack, and it would give up on a live
        receiver. Skipped while acks go out anyway. Numbered like the sender's heartbeats,
        so a copy of an old one written again cannot pass for a live receiver.

        Raises:
            BackendError: If Redis failed (the next beat tries again).
        """
        if self.ended or time.monotonic() - self._last_ack < self.config.heartbeat:
            return
        self._own_beat = max(self._own_beat + 1, time.time_ns() // 1000)
        self._last_ack = time.monotonic()
        self.io.post(Control(kind="beat", role="rx", sender=self.me, seq=self._own_beat))

    def complete(self) -> None:
        """Post the final ack: the application has all the data and is done with it.

        Raises:
            StreamError: If the last chunk was not consumed.
            BackendError: If Redis stays unreachable for the idle timeout.
        """
        final = self._final
        if final is None:
            raise StreamError(f"{self.name} is not complete: its last chunk was not consumed.")
        self._redis(lambda: self.io.post(final), "posting the final ack")
        self.ended = True

    def fail(self, exc: BaseException, closed: bool = False, at: int | None = None) -> None:
        """End the transfer on this side; the sender hears of it unless it caused it.

        Args:
            exc: Why the transfer ended.
            closed: True when the application closed the stream early.
            at: Bytes the application read (default: the last acknowledged offset).
        """
        if self.ended:
            return
        self.ended = True
        if self._remote_ended or self.abandoned:
            return
        if closed:
            control = Control(
                kind="close",
                role="rx",
                sender=self.me,
                off=self.acked.off if at is None else at,
                msg=str(exc),
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
            with_reconnect(
                lambda: self.io.post(control),
                patience=min(self.config.idle_timeout, _NOTICE_PATIENCE),
                stop=threading.Event(),  # the sender must hear of it, also while closing
                what=f"telling the sender that {self.name} ended",
            )
        except Exception:  # best effort: the transfer already ended on this side
            logger.warning(
                "Could not tell the sender of %s that it ended.", self.name, exc_info=True
            )

    def _ack(self, position: Position, done: bool = False) -> Control:
        self.acked, self._last_ack = position, time.monotonic()
        return Control(
            kind="ack", role="rx", sender=self.me, seq=position.seq, off=position.off, done=done
        )

    def _redis(self, call: Callable[[], _T], what: str) -> _T:
        return with_reconnect(
            call,
            patience=self.config.idle_timeout,
            stop=self.stopping,
            what=f"{what} of {self.name}",
        )

    def _apply(self, controls: list[ControlEntry]) -> None:
        for eid, control in controls:
            self._ack_from = eid.decode()
            if control is None:
                continue
            if control.role != "tx":
                continue
            where = f"The sender {control.sender!r} of stream {self.sid}"
            if control.sender != self.announce.origin:
                # Whoever can write to Redis can post here: only the sender speaks for it.
                logger.warning("Ignoring a %s from %s: not its sender.", control.kind, where)
                continue
            if control.kind == "beat":
                self._beat(control, eid)
            elif control.kind == "cancel":
                self._remote_ended = True
                raise StreamCancelled(f"{where} cancelled the transfer.")
            elif control.kind == "error":
                self._remote_ended = True
                raise error_from_wire(control.etype, control.msg, where)

    def _beat(self, control: Control, eid: bytes) -> None:
        """A sender's heartbeat: it is alive, unless this heartbeat was seen already."""
        if 0 <= control.seq <= self._beat_seq:
            # A copy of an earlier heartbeat (senders number them): authentic, but it
            # says nothing about the sender now.
            self.io.ignored = (
                f"Heartbeat {control.seq} of stream {self.sid} (entry {eid.decode()}) was "
                "seen before; a copy is no sign of a live sender."
            )
            logger.warning("Ignoring a control entry: %s", self.io.ignored)
            return
        self._beat_seq = max(self._beat_seq, control.seq)
        self._last_progress = time.monotonic()

    def _check_idle(self) -> None:
        idle = time.monotonic() - self._last_progress
        if idle > self.config.idle_timeout:
            raise StreamTimeout(
                f"{self.name[0].upper()}{self.name[1:]}: neither a chunk nor a heartbeat "
                f"arrived for {idle:.0f} s (idle timeout {self.config.idle_timeout} s); "
                "the sender is gone."
            )

"""The sending side of one transfer: a thread that writes chunk frames under flow control.

The thread cuts the source into chunks, writes them to the transfer's data stream in
pipelined batches (one round trip per ~16 MB, which also reads new acks and trims frames
every receiver consumed), and blocks on the ack stream whenever the slowest receiver
lags by a full window. The future resolves with the byte count once every receiver has
acknowledged the end; the keys are then deleted. Cancelling posts a ``cancel`` control at
once, from the caller's thread, so receivers stop within one blocking read.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from framework.cell.assembler import encode_chunk
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce, Control, error_from_wire, iter_chunks
from framework.cell.transport import FAILED_TTL, TransferIO
from framework.cell.types import Stream, StreamFuture, StreamTaskSpec
from framework.cell.window import Position, Window
from framework.exceptions import FrameworkError, StreamCancelled, StreamError, StreamTimeout

__all__ = ["TxTask"]

logger = logging.getLogger(__name__)


class TxTask(StreamTaskSpec):
    """Sends one source to the targets of an announced transfer.

    Args:
        io: Redis side of the transfer.
        announce: The transfer as announced.
        source: The stream to send, positioned at ``start.off``.
        future: The sender's future.
        config: Batch sizes and timeouts.
        cipher: Seals chunks when the transfer is secure.
        start: Where a resumed sender continues (the next chunk is ``start.seq + 1``).
        finished: True when a resumed transfer already holds its last chunk, so only
            the receivers' final acks are awaited.
    """

    def __init__(
        self,
        io: TransferIO,
        announce: Announce,
        source: Stream,
        future: StreamFuture,
        config: CellConfig,
        cipher: ChunkCipher | None = None,
        start: Position | None = None,
        finished: bool = False,
    ) -> None:
        self.io = io
        self.announce = announce
        self.source = source
        self.future = future
        self.config = config
        self.cipher = cipher
        self.window = Window(announce.targets, announce.window, start)
        self._written_all = finished
        self._ack_from = "0-0"
        self._stop = threading.Event()
        self._last_progress = time.monotonic()
        self._last_refresh = time.monotonic()
        self.thread = threading.Thread(
            target=self._run, name=f"fw-cell-tx-{announce.sid}", daemon=True
        )

    def start(self) -> None:
        """Start the sending thread."""
        self.thread.start()

    def cancel(self) -> None:
        """Stop sending and tell the receivers now (called by ``StreamFuture.cancel``)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._post_quietly(
            Control(
                kind="cancel", role="tx", sender=self.announce.origin, msg="cancelled by the sender"
            )
        )

    def stop(self) -> None:
        """Cancel the transfer unless it already finished (used by ``StreamCell.close``)."""
        if not self.future.done():
            self.future.cancel()

    def join(self, timeout: float | None) -> None:
        """Wait for the sending thread."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        sid = self.announce.sid
        try:
            total = self._send()
        except FrameworkError as exc:
            self._fail(exc)
        except Exception as exc:
            # The source or a callback broke: the receivers must hear of it, not time out.
            logger.exception("Sending stream %s failed.", sid)
            self._fail(exc)
        else:
            self._cleanup(delete=True)
            self.future.set_result(total)
            logger.debug("Stream %s: %d bytes delivered to %s.", sid, total, self.announce.targets)
        finally:
            self._close_source()

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:  # the transfer's outcome is already settled
            logger.warning(
                "Closing the source of stream %s failed.", self.announce.sid, exc_info=True
            )

    def _fail(self, exc: BaseException) -> None:
        if not self._stop.is_set():
            level = logging.DEBUG if self.announce.optional else logging.WARNING
            logger.log(
                level, "Stream %s to %s failed: %s", self.announce.sid, self.announce.targets, exc
            )
            self._stop.set()
            etype = type(exc).__name__ if isinstance(exc, FrameworkError) else "StreamError"
            self._post_quietly(
                Control(
                    kind="error", role="tx", sender=self.announce.origin, etype=etype, msg=str(exc)
                )
            )
        self._cleanup(delete=False)
        self.future.set_exception(exc)

    def _send(self) -> int:
        if not self._written_all:
            self._write_all()
        while not self.window.all_done():
            self._await_controls()
        return self.window.sent.off

    def _write_all(self) -> None:
        cfg, sid = self.config, self.announce.sid
        batch: list[tuple[int, bytes, Any]] = []
        pending = 0
        for data, last in iter_chunks(self.source, self.announce.chunk_size):
            while self.window.room() <= 0:
                if batch:
                    pending = self._flush(batch)
                self._await_controls()
            seq, off = self.window.sent.seq + 1, self.window.sent.off
            header, wire = encode_chunk(sid, seq, off, data, last, self.cipher)
            batch.append((seq, header, wire))
            pending += len(wire)
            self.window.on_sent(seq, off + len(data))
            if pending >= cfg.batch_bytes or last:
                pending = self._flush(batch)
        self._written_all = True

    def _flush(self, batch: list[tuple[int, bytes, Any]]) -> int:
        """Write the batch (clearing it); returns the new pending byte count, 0."""
        self._check_stop()
        controls = self.io.write(batch, self.window.trim_point(), self._ack_from)
        batch.clear()
        self._last_refresh = time.monotonic()
        self.future.set_progress(self.window.sent.off)
        self._apply(controls)
        return 0

    def _await_controls(self) -> None:
        self._check_stop()
        idle = time.monotonic() - self._last_progress
        if idle > self.config.idle_timeout:
            raise StreamTimeout(
                f"Stream {self.announce.sid}: no receiver made progress for {idle:.0f} s "
                f"(idle timeout {self.config.idle_timeout} s); waiting on {self._laggards()}."
            )
        self._apply(self.io.wait_controls(self._ack_from))
        if time.monotonic() - self._last_refresh > self.io.ttl / 4:
            self.io.write([], self.window.trim_point(), self._ack_from)
            self._last_refresh = time.monotonic()

    def _apply(self, controls: list[tuple[bytes, Control]]) -> None:
        for eid, control in controls:
            self._ack_from = eid.decode()
            if control.role == "tx":
                self._check_stop()
                if control.kind != "ack":
                    # Posted by an earlier sender of this transfer (seen when resuming).
                    raise StreamError(
                        f"Stream {self.announce.sid} was already ended by its sender: {control.msg}"
                    )
                continue
            where = f"Receiver {control.sender!r} of stream {self.announce.sid}"
            if control.kind == "ack":
                if self.window.on_ack(
                    control.sender, Position(control.seq, control.off), control.done
                ):
                    self._last_progress = time.monotonic()
            elif control.kind == "close":
                raise StreamCancelled(f"{where} closed the stream after {control.off} bytes.")
            else:
                raise error_from_wire(control.etype or "StreamCancelled", control.msg, where)

    def _laggards(self) -> list[str]:
        slowest = self.window.slowest()
        return [t for t in self.window.targets if self.window.acked(t) == slowest]

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise StreamCancelled(f"Stream {self.announce.sid} was cancelled.")

    def _post_quietly(self, control: Control) -> None:
        try:
            self.io.post(control)
        except Exception:  # best effort: the transfer already ended
            logger.warning(
                "Could not tell the receivers of stream %s that it ended.",
                self.announce.sid,
                exc_info=True,
            )

    def _cleanup(self, delete: bool) -> None:
        try:
            if delete:
                self.io.delete()
            else:
                self.io.expire(min(FAILED_TTL, self.io.ttl))
        except Exception:  # best effort: the keys carry a TTL anyway
            logger.warning(
                "Could not clean up the keys of stream %s.", self.announce.sid, exc_info=True
            )

"""The sending side of one transfer: a thread that writes chunk frames under flow control.

The thread takes reads from the source's pump (:mod:`framework.cell.pump`), cuts them
into chunks and writes them to the transfer's data stream in pipelined batches (one
round trip per ~16 MB, which also reads new acks and trims frames every receiver
consumed). Bytes never wait longer than the linger (20 ms) for a batch to fill, and
while the source has nothing new the sender posts a heartbeat, so a receiver's idle
timeout measures whether the sender is alive, not how fast its source is. The sender
blocks on the ack stream whenever the slowest receiver lags by a full window. The future
resolves with the byte count once every receiver has acknowledged the end (after its
application was done with the data); the keys are then deleted. A receiver that holds the
others back and has neither consumed nor said it is alive for the idle timeout (killed,
or never started) is given up on: the others get the whole stream, then the future fails
naming it. Cancelling posts a ``cancel`` control at once, from the caller's thread. A
dropped connection is retried (:func:`~framework.cell.reconnect.with_reconnect`); acks
that cannot be genuine (beyond what was sent, or a ``done`` before the last chunk) are
logged and ignored.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from framework.cell.assembler import encode_chunk
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce, Control, error_from_wire
from framework.cell.pump import EOF, Chunk, Chunker, make_pump
from framework.cell.reconnect import with_reconnect
from framework.cell.transport import FAILED_TTL, ControlEntry, TransferIO
from framework.cell.types import Stream, StreamFuture, StreamTaskSpec
from framework.cell.window import Position, Window
from framework.exceptions import (
    BackendError,
    FrameworkError,
    StreamCancelled,
    StreamDataLost,
    StreamError,
    StreamTimeout,
)

__all__ = ["TxTask"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Longest time (s) spent retrying an ending notice (cancel runs in the caller's thread).
_NOTICE_PATIENCE = 5.0
#: Seconds between two tries of an error notice that Redis refused.
_NOTICE_RETRY = 0.25


class TxTask(StreamTaskSpec):
    """Sends one source to the targets of an announced transfer.

    Args:
        io: Redis side of the transfer.
        announce: The transfer as announced.
        source: The stream to send, positioned at ``start.off``.
        future: The sender's future.
        config: Batch sizes, linger, heartbeat and timeouts.
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
        self.future = future
        self.config = config
        self.cipher = cipher
        self.window = Window(announce.targets, announce.window, start)
        self.pump = make_pump(source, announce.chunk_size, f"fw-cell-src-{announce.sid}")
        self._chunker = Chunker(announce.chunk_size)
        # The last chunk's end once it is written: only then can a "done" ack be genuine.
        self._final: Position | None = self.window.sent if finished else None
        self._batch: list[tuple[int, bytes, Any]] = []
        self._pending = 0
        self._linger = config.linger if self.pump.thread is not None else math.inf
        self._flush_by: float | None = None
        self._ack_from = "0-0"
        self._stop = threading.Event()
        self._last_progress = self._last_write = self._last_refresh = time.monotonic()
        self._beat = -1  # the number of the last heartbeat posted
        self._rx_beats: dict[str, int] = {}  # receiver -> the number of its last heartbeat
        # A receiver's heartbeat shows it alive, not progress: frames it has not
        # acknowledged are still checked for (see _check_frames_kept).
        self._last_heard = self._last_progress
        # Receiver -> when it last consumed or said it is alive; and those given up on.
        self._heard = dict.fromkeys(self.window.targets, self._last_progress)
        self._gone: dict[str, str] = {}
        self._give_ups: dict[str, str] = {}  # asked for by other threads (give_up_on)
        self._give_ups_lock = threading.Lock()
        self.thread = threading.Thread(
            target=self._run, name=f"fw-cell-tx-{announce.sid}", daemon=True
        )

    def start(self) -> None:
        """Start the sending thread."""
        self.thread.start()

    def threads(self) -> list[threading.Thread]:
        """The sending thread and, for a live source, its reading thread."""
        return [self.thread] + ([self.pump.thread] if self.pump.thread is not None else [])

    def cancel(self) -> None:
        """Stop sending and tell the receivers now (called by ``StreamFuture.cancel``)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._post_quietly(self._control("cancel", msg="cancelled by the sender"))

    def cancel_note(self) -> str:
        """Say when every byte was already sent: a receiver may have taken it whole."""
        if self._final is None:
            return ""
        return (
            " after its last byte was sent: a receiver may have got it whole "
            "before it heard of the cancel"
        )

    def give_up_on(self, target: str, why: str) -> None:
        """Go on without ``target`` (known gone elsewhere); the future then fails naming it.

        Thread-safe; the sending thread acts on it at its next wait on the receivers.
        """
        with self._give_ups_lock:
            self._give_ups.setdefault(target, why.rstrip("."))

    def stop(self) -> None:
        """Cancel the transfer unless it already finished (used by ``StreamCell.close``)."""
        if not self.future.done():
            self.future.cancel()

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
            self.pump.close()

    def _fail(self, exc: BaseException) -> None:
        if not self._stop.is_set():
            level = logging.DEBUG if self.announce.optional else logging.WARNING
            logger.log(
                level, "Stream %s to %s failed: %s", self.announce.sid, self.announce.targets, exc
            )
            self._stop.set()
            # The frames go first: a Redis out of memory that refused the transfer may
            # take the notice once they are freed. The caller learns of the failure at
            # once; the notice may take a few seconds (see _post_quietly).
            self._cleanup(delete=False)
            self.future.set_exception(exc)
            etype = type(exc).__name__ if isinstance(exc, FrameworkError) else "StreamError"
            self._post_quietly(self._control("error", etype=etype, msg=str(exc)), refused=True)
            return
        # Stopped by a cancel (or a close) that marked the transfer ended itself: an
        # "error" mark written now would overwrite it.
        self._cleanup(delete=False, mark=False)
        self.future.set_exception(exc)

    def _send(self) -> int:
        if self._final is None:
            self.pump.start()
            while self._final is None:
                self._step()
        while not self.window.all_done():
            self._await_controls()
        if self._gone:
            why = "; ".join(f"{t!r}: {reason}" for t, reason in self._gone.items())
            raise StreamError(
                f"Stream {self.announce.sid} reached {self.window.targets} whole, but not "
                f"{list(self._gone)}, which the sender gave up on ({why})."
            )
        return self.window.sent.off

    def _step(self) -> None:
        """Take one read from the source (or time out) and write what is due."""
        now = time.monotonic()
        if self._flush_by is not None:
            wait = self._flush_by - now
        else:
            wait = self.config.heartbeat - (now - self._last_write)
        item = self.pump.get(min(wait, self.config.heartbeat))
        self._check_stop()
        if item is EOF:
            self._emit(self._chunker.finish())
            self._flush()
        elif item is not None:
            self._emit(self._chunker.feed(item))
            if self._flush_by is None and (self._chunker.buffered or self._batch):
                self._flush_by = time.monotonic() + self._linger
        if self._flush_by is not None and time.monotonic() >= self._flush_by:
            self._emit(self._chunker.flush())
            self._flush()
        elif item is None and time.monotonic() - self._last_write >= self.config.heartbeat:
            # The source is slow but we are alive: receivers must not time out on us.
            self._redis(lambda: self.io.post(self._control("beat")), "posting a heartbeat")
            self._last_write = time.monotonic()

    def _emit(self, chunks: list[Chunk]) -> None:
        sid = self.announce.sid
        for data, last in chunks:
            while self.window.room() <= 0:
                self._flush()
                # The write reads the acks posted meanwhile: wait only if they left the
                # window full (waiting anyway stalled the transfer for a whole poll
                # whenever the receiver, caught up, had no ack due yet).
                if self.window.room() <= 0:
                    self._await_controls()
            seq, off = self.window.sent.seq + 1, self.window.sent.off
            header, wire = encode_chunk(sid, seq, off, data, last, self.cipher)
            self._batch.append((seq, header, wire))
            self._pending += len(wire)
            self.window.on_sent(seq, off + len(data))
            if last:
                self._final = self.window.sent
            if self._pending >= self.config.batch_bytes:
                self._flush()

    def _flush(self) -> None:
        """Write the pending batch in one round trip."""
        self._check_stop()
        self._flush_by = None
        if not self._batch:
            return
        batch, trim = self._batch, self.window.trim_point()
        controls = self._redis(lambda: self.io.write(batch, trim, self._ack_from), "writing chunks")
        self._batch, self._pending = [], 0
        self._last_write = self._last_refresh = time.monotonic()
        self.future.set_progress(self.window.sent.off)
        self._apply(controls)

    def _await_controls(self) -> None:
        self._check_stop()
        self._drop_gone()
        idle = time.monotonic() - max(self._last_progress, self._last_heard)
        if idle > self.config.idle_timeout:
            ignored = f" Ignored: {self.io.ignored}" if self.io.ignored else ""
            raise StreamTimeout(
                f"Stream {self.announce.sid}: no receiver made progress for {idle:.0f} s "
                f"(idle timeout {self.config.idle_timeout} s); waiting on {self._laggards()}."
                + ignored
            )
        self._apply(self._redis(lambda: self.io.wait_controls(self._ack_from), "reading acks"))
        if time.monotonic() - self._last_write >= self.config.heartbeat:
            # Waiting on receivers is no silence: a receiver that has read everything
            # must not count this sender gone. The write also meets a Redis that refuses
            # writes (out of memory) while the receivers cannot post their acks.
            self._check_frames_kept()
            self._redis(lambda: self.io.post(self._control("beat")), "posting a heartbeat")
            self._last_write = time.monotonic()
        if time.monotonic() - self._last_refresh > self.io.ttl / 4:
            trim = self.window.trim_point()
            self._redis(lambda: self.io.write([], trim, self._ack_from), "refreshing the TTL")
            self._last_refresh = time.monotonic()

    def _drop_gone(self) -> None:
        """Go on without receivers given up on, and silent ones the others are ahead of.

        A receiver that holds the others back (it has bytes or the end to acknowledge),
        has neither consumed nor posted a heartbeat for the idle timeout, and lags behind
        another receiver is killed or was never started: the receivers still consuming
        must not wait on it, nor fail with it. When no receiver is ahead of the silent
        ones, the idle timeout fails the transfer.
        """
        with self._give_ups_lock:
            asked, self._give_ups = self._give_ups, {}
        now, window = time.monotonic(), self.window
        ahead = max((window.acked(t), window.done(t)) for t in window.targets)
        silent = {
            t: f"it neither consumed nor said it is alive for {now - self._heard[t]:.0f} s"
            for t in self._holding_back()
            if now - self._heard[t] > self.config.idle_timeout
            and (window.acked(t), window.done(t)) < ahead
        }
        for target, why in {**silent, **asked}.items():
            if target not in window.targets or window.done(target):
                continue
            if len(window.targets) == 1:
                raise StreamError(f"Stream {self.announce.sid}: {target!r} is gone ({why}).")
            logger.warning("Stream %s goes on without %r: %s.", self.announce.sid, target, why)
            window.drop(target)
            self._gone[target] = why
            self._last_progress = now  # the others may move again

    def _holding_back(self) -> list[str]:
        """Receivers the transfer waits on: bytes, or the end, left to acknowledge."""
        sent, window = self.window.sent, self.window
        return [
            t
            for t in window.targets
            if not window.done(t) and (window.acked(t) < sent or self._final is not None)
        ]

    def _check_frames_kept(self) -> None:
        """Frames a receiver has not acknowledged must still be in Redis.

        A Redis restarted without persistence, flushed or evicting loses them; the
        receivers then wait for chunks and this sender for acks, until both time out
        blaming the other. Receivers ack at least once per heartbeat while they
        consume, so after two heartbeats without progress they have no such frame
        left in memory either.

        Raises:
            StreamError: The unacknowledged frames are no longer in Redis.
        """
        slowest, sent = self.window.slowest(), self.window.sent
        if sent.seq <= slowest.seq:
            return
        if time.monotonic() - self._last_progress < 2 * self.config.heartbeat:
            return
        last = self._redis(self.io.last_frame, "checking the chunks in Redis")
        if last is not None and last.seq >= sent.seq:
            return
        raise StreamDataLost(
            f"Stream {self.announce.sid}: Redis no longer holds chunks {slowest.seq + 1} to "
            f"{sent.seq} (bytes {slowest.off} to {sent.off}), which {self._laggards()} had "
            "not acknowledged: it restarted without persistence, was flushed, or evicted "
            "them. Those bytes are lost to those receivers."
        )

    def _apply(self, controls: list[ControlEntry]) -> None:
        self._apply_verified(controls)
        # After the genuine acks read with them: they show who got somewhere.
        for unverified in self.io.take_unverified():
            self._on_unverified_refusal(unverified)

    def _apply_verified(self, controls: list[ControlEntry]) -> None:
        for eid, control in controls:
            self._ack_from = eid.decode()
            if control is None:
                continue
            if control.role == "tx":
                self._check_stop()
                if control.sender != self.announce.origin:
                    logger.warning(
                        "Ignoring a %s from %r of stream %s: not its sender.",
                        control.kind,
                        control.sender,
                        self.announce.sid,
                    )
                    continue
                if control.kind not in ("ack", "beat"):
                    # Posted by an earlier sender of this transfer (seen when resuming).
                    raise StreamError(
                        f"Stream {self.announce.sid} was already ended by its sender: {control.msg}"
                    )
                continue
            where = f"Receiver {control.sender!r} of stream {self.announce.sid}"
            if control.sender in self._gone:
                logger.info("Ignoring a %s from %s: given up on.", control.kind, where)
                continue
            if control.sender not in self.window.targets:
                # Whoever can write to Redis can post here: only a target speaks for one.
                logger.warning("Ignoring a %s from %s: not a target.", control.kind, where)
                continue
            if control.kind == "ack":
                self._on_ack(control, where)
            elif control.kind == "close":
                raise StreamCancelled(f"{where} closed the stream after {control.off} bytes.")
            elif control.kind == "beat":
                self._on_beat(control, where)
            else:
                raise error_from_wire(control.etype or "StreamCancelled", control.msg, where)

    def _on_unverified_refusal(self, control: Control) -> None:
        """A target that got nowhere refused the transfer without the transfer's key.

        A receiver that does not hold the sender's key cannot sign its refusal (it has
        another key, or none for a secure transfer): waiting out the idle timeout would
        only blame it later. The notice is not trusted for anything else, and a forged
        one costs no more than the forged chunk or deleted key that anyone who can write
        to Redis can fail a transfer with.
        """
        target, window = control.sender, self.window
        if not (control.role == "rx" and control.kind == "error" and target in window.targets):
            return
        if window.done(target) or target in self._gone or window.acked(target) > Position():
            return  # it authenticated acks before: this notice is not its own
        why = (
            f"refused the transfer ({control.etype}: {control.msg.rstrip('.')}) in a notice "
            "not authenticated with the transfer's key: do both cells hold the same key?"
        )
        if len(window.targets) == 1:
            raise StreamError(f"Stream {self.announce.sid}: receiver {target!r} {why}")
        self.give_up_on(target, f"it {why}")

    def _on_beat(self, control: Control, where: str) -> None:
        """A receiver busy with the data is alive (see ``RxTransfer.beat``); once per number."""
        if control.seq <= self._rx_beats.get(control.sender, -1):
            logger.warning(
                "Ignoring heartbeat %d from %s: seen before; a copy is no sign of a live receiver.",
                control.seq,
                where,
            )
            return
        self._rx_beats[control.sender] = control.seq
        self._last_heard = self._heard[control.sender] = time.monotonic()

    def _on_ack(self, control: Control, where: str) -> None:
        position = Position(control.seq, control.off)
        if position > self.window.sent or (control.done and position != self._final):
            # Whoever can write to Redis can post acks; this one cannot be genuine.
            logger.warning(
                "Ignoring an impossible ack from %s: %s (sent %s, last chunk %s).",
                where,
                position,
                self.window.sent,
                self._final,
            )
            return
        if self.window.on_ack(control.sender, position, control.done):
            self._last_progress = self._heard[control.sender] = time.monotonic()

    def _laggards(self) -> list[str]:
        slowest = self.window.slowest()
        return [t for t in self.window.targets if self.window.acked(t) == slowest]

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise StreamCancelled(f"Stream {self.announce.sid} was cancelled.")

    def _redis(self, call: Callable[[], _T], what: str) -> _T:
        return with_reconnect(
            call,
            patience=self.config.idle_timeout,
            stop=self._stop,
            what=f"{what} of stream {self.announce.sid}",
        )

    def _control(self, kind: Any, etype: str = "", msg: str = "") -> Control:
        seq = -1
        if kind == "beat":
            # Each heartbeat carries a number larger than the last (the clock in us):
            # receivers act on each number once, so a copy of an old heartbeat written
            # again cannot pass for a live sender, even in a resumed transfer.
            self._beat = seq = max(self._beat + 1, time.time_ns() // 1000)
        origin = self.announce.origin
        return Control(kind=kind, role="tx", sender=origin, seq=seq, etype=etype, msg=msg)

    def _post_quietly(self, control: Control, refused: bool = False) -> None:
        """Post an ending notice, riding out dropped connections for a few seconds.

        With ``refused``, a write Redis refuses (out of memory, say) is tried again
        within that time too: otherwise the receivers would wait out their idle
        timeout and blame this sender's silence.
        """
        patience = min(self.config.idle_timeout, _NOTICE_PATIENCE)
        deadline = time.monotonic() + patience

        def post() -> None:
            with_reconnect(
                lambda: self.io.post(control),
                patience=patience,
                stop=threading.Event(),  # the notice must go out although the task stopped
                what=f"posting {control.kind} of stream {self.announce.sid}",
            )

        try:
            while True:
                try:
                    return post()
                except BackendError:
                    if not refused or time.monotonic() >= deadline:
                        raise
                    time.sleep(_NOTICE_RETRY)
        except Exception:  # best effort: the transfer already ended
            logger.warning(
                "Could not tell the receivers of stream %s that it ended.",
                self.announce.sid,
                exc_info=True,
            )

    def _cleanup(self, delete: bool, mark: bool = True) -> None:
        try:
            if delete:
                self.io.delete()
            else:
                # The transfer is over for everyone: its frames go now.
                reason = "error" if mark else None
                self.io.expire(min(FAILED_TTL, self.io.ttl), reason, drop_data=True)
        except Exception:  # best effort: the keys carry a TTL anyway
            logger.warning(
                "Could not clean up the keys of stream %s.", self.announce.sid, exc_info=True
            )

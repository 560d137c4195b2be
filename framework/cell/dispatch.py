"""The receiving half of a cell: reads its inbox and starts one worker per transfer.

A thread named ``fw-cell-inbox-<cell>`` first re-reads the announcements this cell name
took but never finished (a restarted cell resumes them from the position its
predecessor acknowledged), then waits for new ones. Callbacks are found as NVFlare finds
them: the channel and topic, else the channel and topic ``"*"``, else ``"*"``/``"*"``.
Announcements are authenticated as the inbox reads them (:mod:`framework.cell.inbox`),
and a transfer starts only if the copy stored with its keys is the same. An
announcement with no callback waits :data:`CALLBACK_GRACE` seconds for one to be
registered, then its sender is told there is none. Each transfer runs in its own
:class:`~framework.cell.worker.RxWorker`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from framework._failures import RepeatedFailure
from framework.cell.auth import BadPositionError, ControlAuth
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce, Control
from framework.cell.inbox import Inbox
from framework.cell.lease import ReceiverLease
from framework.cell.receiver import RxTransfer
from framework.cell.transport import TransferIO
from framework.cell.window import Position
from framework.cell.worker import Handler, RxWorker
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import EncryptionError, FrameworkError, FramingError, StreamError

__all__ = ["Dispatcher"]

logger = logging.getLogger(__name__)

#: Longest pause (s) between refreshes of the inbox's TTL and consumer group.
_REFRESH_EVERY = 60.0

#: Seconds an announcement waits for a callback of its channel and topic before its
#: sender hears that there is none. NVFlare refuses at once; the grace covers callbacks
#: registered one after another while a cell starts.
CALLBACK_GRACE = 2.0

#: The topic (and channel) of a callback that takes what no other callback takes.
WILDCARD = "*"

#: Streams a cell remembers having received, to ignore a copy announced again (ids are
#: random 62-bit numbers: a genuine new transfer never repeats one). About 2 MB.
SETTLED_KEPT = 20_000

#: Builds the cipher and the control authenticator of a transfer from (secure, sid);
#: raises EncryptionError when the transfer is secure and the cell has no key.
Security = Callable[[bool, int], tuple[ChunkCipher | None, ControlAuth | None]]


class Dispatcher:
    """Routes a cell's announcements to the registered callbacks.

    Args:
        conn: The connection.
        name: The cell's name.
        config: Sizes, timeouts and whether plaintext transfers are refused.
        security: Builds the cipher and authenticator of a transfer.
        stopping: Set by the cell's ``close()``.
        key: The cell key, which authenticates announcements (None: unchecked).
    """

    def __init__(
        self,
        conn: RedisConnection,
        name: str,
        config: CellConfig,
        security: Security,
        stopping: threading.Event,
        key: bytes | None = None,
    ) -> None:
        self.conn = conn
        self.name = name
        self.config = config
        self.inbox = Inbox(conn, name, config.inbox_ttl, key)
        self._lease = ReceiverLease(conn, name)
        self._security = security
        self._stopping = stopping
        self._handlers: dict[tuple[str, str], Handler] = {}
        #: sid -> (announcement entry, announcement, when it was read)
        self._waiting: dict[int, tuple[bytes, Announce, float]] = {}
        self._rx: dict[int, RxWorker] = {}
        self._ending: list[threading.Thread] = []  # threads of finished workers, until they end
        #: Streams this cell received to the end (delivered or failed), newest last.
        self._settled: OrderedDict[int, None] = OrderedDict()
        self._lock = threading.RLock()
        self._inbox_failures = RepeatedFailure(logger, f"Reading the inbox of cell {name!r}")
        self.thread: threading.Thread | None = None

    def register(self, channel: str, topic: str, handler: Handler) -> None:
        """Route ``channel``/``topic`` to ``handler``; starts reading the inbox.

        Raises:
            ConfigurationError: If another live cell with this name receives already
                (see :mod:`framework.cell.lease`).
        """
        with self._lock:
            if self.thread is None:
                self._lease.acquire()
            self._handlers[(channel, topic)] = handler
            self._start_waiting()
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._loop, name=f"fw-cell-inbox-{self.name}", daemon=True
                )
                self.thread.start()

    @property
    def name_taken_by(self) -> str | None:
        """The holder of this cell's name once another cell took it (see the lease)."""
        return self._lease.lost_to

    @property
    def inbox_failing(self) -> str | None:
        """Why the inbox cannot be read, while that lasts (see :class:`RepeatedFailure`)."""
        return self._inbox_failures.failing

    def threads(self) -> list[threading.Thread]:
        """Every thread to join on close: the inbox reader and the workers."""
        with self._lock:
            found = [w.thread for w in self._rx.values()] + self._ending
        return found + ([self.thread] if self.thread is not None else [])

    def _loop(self) -> None:
        try:
            self._read_inbox()
        finally:
            try:
                self._lease.release()
            except FrameworkError as exc:  # it lapses on its own within seconds
                logger.warning("Cell %r could not release its lease: %s", self.name, exc)

    def _read_inbox(self) -> None:
        first = True
        refreshed = 0.0
        failures = self._inbox_failures
        while not self._stopping.is_set():
            try:
                if not self._lease.refresh():  # another cell receives under this name
                    failures.succeeded()
                    self._stopping.wait(MAX_BLOCK_MS / 1000)
                    continue
                if time.monotonic() - refreshed > min(_REFRESH_EVERY, self.config.inbox_ttl / 4):
                    self.inbox.ensure()
                    refreshed = time.monotonic()
                # After a restart, first take back what this cell name left unfinished.
                entries = self.inbox.pending() if first else self.inbox.receive()
                first = False
                failures.succeeded()
                self._tell_unverified()
                with self._lock:
                    for eid, ann in entries:
                        self._dispatch(eid, ann)
                    self._start_waiting()
            except Exception as exc:  # noqa: BLE001 - thread boundary: logged (RepeatedFailure), retried
                failures.failed(exc)
                self._stopping.wait(MAX_BLOCK_MS / 1000)
            with self._lock:
                for sid in [s for s, w in self._rx.items() if not w.thread.is_alive()]:
                    del self._rx[sid]
                self._ending = [t for t in self._ending if t.is_alive()]

    def _dispatch(self, eid: bytes, ann: Announce | None) -> None:
        if ann is None or ann.sid in self._rx or ann.sid in self._waiting:
            self.inbox.done(eid)  # unreadable, or a duplicate announcement
            return
        if ann.sid in self._settled:
            # A signed announcement is genuine, not fresh: whoever can write to Redis can
            # copy one, with the transfer's keys, and add it again once it is done.
            logger.warning(
                "Ignoring the announcement of stream %s from %r: cell %r received that "
                "transfer already (a replay?).",
                ann.sid,
                ann.origin,
                self.name,
            )
            self.inbox.done(eid)
            return
        self._waiting[ann.sid] = (eid, ann, time.monotonic())
        if self._handler_for(ann) is None:
            logger.debug(
                "Stream %s on %s/%s waits for a callback.", ann.sid, ann.channel, ann.topic
            )

    def _handler_for(self, ann: Announce) -> Handler | None:
        """The callback of the transfer's channel and topic, or of a wildcard (NVFlare's)."""
        for key in ((ann.channel, ann.topic), (ann.channel, WILDCARD), (WILDCARD, WILDCARD)):
            handler = self._handlers.get(key)
            if handler is not None:
                return handler
        return None

    def _start_waiting(self) -> None:
        """Start every waiting transfer that now has a callback; refuse those left without."""
        for sid, (eid, ann, since) in list(self._waiting.items()):
            if self._stopping.is_set():
                return
            handler = self._handler_for(ann)
            try:
                if handler is not None:
                    self._start(eid, ann, handler)
                elif time.monotonic() - since > CALLBACK_GRACE:
                    self._refuse(eid, self._io_for(ann), self._no_callback(ann))
                else:
                    continue
            except FrameworkError:
                # Stays waiting; the inbox loop retries after its next read.
                logger.warning("Could not start receiving stream %s.", sid, exc_info=True)
                continue
            del self._waiting[sid]

    def _no_callback(self, ann: Announce) -> StreamError:
        return StreamError(
            f"Cell {self.name!r} has no callback registered for {ann.channel}/{ann.topic} "
            f"(waited {CALLBACK_GRACE:g} s for one)."
        )

    def _io_for(self, ann: Announce) -> TransferIO:
        """The transfer's keys, with its control authenticator when this cell can make it."""
        try:
            _, auth = self._security(ann.secure, ann.sid)
        except EncryptionError:  # secure, but no key here: the sender's checks tell it so
            auth = None
        return TransferIO(self.conn, ann.sid, self.config.ttl, auth)

    def _start(self, eid: bytes, ann: Announce, handler: Handler) -> None:
        try:
            cipher, auth = self._security(ann.secure, ann.sid)
        except EncryptionError as exc:
            self._refuse(eid, TransferIO(self.conn, ann.sid, self.config.ttl), exc)
            return
        io = TransferIO(self.conn, ann.sid, self.config.ttl, auth)
        if not self._stored_matches(io, ann):
            self.inbox.done(eid)
            return
        if self.config.require_secure and not ann.secure:
            refusal = EncryptionError(
                f"Cell {self.name!r} accepts only encrypted transfers (require_secure=True); "
                f"send stream {ann.sid} with secure=True."
            )
            self._refuse(eid, io, refusal)
            return
        why = ""
        try:
            start = io.acked(self.name)
        except BadPositionError as exc:
            # Where this cell really was is unknown: from the start, if Redis still can.
            logger.warning("Cell %r starts stream %s over: %s", self.name, ann.sid, exc)
            start, why = Position(), " (from the start: its stored position is not authentic)"
        except FramingError as exc:  # a malformed stored position never mends: no retries
            self._refuse(eid, io, exc)
            return
        if start.seq < 0 and not why and self._ended_unread(io):
            self.inbox.done(eid)
            return
        if start.seq >= 0 or why:
            try:
                io.check_resumable(start, why)
            except FramingError as exc:  # it would wait for a chunk that never comes
                self._refuse(eid, io, exc)
                return
        if start.seq >= 0:
            logger.info("Cell %r resumes stream %s at byte %d.", self.name, ann.sid, start.off)
        rx = RxTransfer(io, ann, self.name, self.config, cipher, start, self._stopping)
        worker = RxWorker(rx, handler, eid, self.config.max_blob_size, self._done)
        self._rx[ann.sid] = worker
        worker.start()

    def _stored_matches(self, io: TransferIO, ann: Announce) -> bool:
        """Whether the transfer still exists and its stored announcement is ``ann``.

        The inbox checked ``ann`` (its MAC, when this cell has a key); the copy kept with
        the transfer's keys must say the same, or one of the two was rewritten.
        """
        try:
            stored = io.load()
        except FramingError as exc:
            logger.warning("Ignoring stream %s for cell %r: %s", ann.sid, self.name, exc)
            return False
        if stored is None:
            logger.debug("Stream %s ended before cell %r picked it up.", ann.sid, self.name)
            return False
        if stored != ann:
            logger.warning(
                "Ignoring stream %s for cell %r: its inbox announcement (from %r on %s/%s) "
                "differs from the one stored with the transfer (from %r on %s/%s): one "
                "of them was forged or altered.",
                ann.sid,
                self.name,
                ann.origin,
                ann.channel,
                ann.topic,
                stored.origin,
                stored.channel,
                stored.topic,
            )
            return False
        return True

    def _ended_unread(self, io: TransferIO) -> bool:
        """Whether a transfer this cell has read none of already ended (failed or cancelled).

        Its keys outlive it for a minute, so that its parties learn why; a cell that
        starts meanwhile is not handed a transfer that is over (a ``recv --count 1``
        started after a failed send would count that failure as its file). One this
        cell already received part of goes to its callback, which hears why and
        cleans up.
        """
        why = io.ended()
        if why is None:
            return False
        logger.info(
            "Stream %s ended (%s) before cell %r read any of it: not delivered.",
            io.sid,
            why,
            self.name,
        )
        return True

    def _settle(self, sid: int) -> None:
        """Remember that stream ``sid`` ended here, so a copy announced again is ignored."""
        with self._lock:
            self._settled[sid] = None
            while len(self._settled) > SETTLED_KEPT:
                self._settled.popitem(last=False)

    def _tell_unverified(self) -> None:
        """Tell the senders of announcements whose MAC failed here, unsigned.

        A sender whose key differs from this cell's would otherwise wait out its idle
        timeout, then blame this cell for making no progress. The notice cannot be
        signed with the sender's key; the sender takes it as a refusal only from a
        target that acknowledged nothing (see ``TxTask``).
        """
        for ann in self.inbox.take_unverified():
            notice = Control(
                kind="error",
                role="rx",
                sender=self.name,
                etype="StreamError",
                msg=f"Cell {self.name!r} could not authenticate the announcement with its key",
            )
            try:
                TransferIO(self.conn, ann.sid, self.config.ttl).post_unsigned_notice(notice)
            except FrameworkError as exc:  # the sender times out instead, as before
                logger.warning("Could not tell the sender of stream %s: %s", ann.sid, exc)

    def _refuse(self, eid: bytes, io: TransferIO, exc: FrameworkError) -> None:
        """Tell the sender why this cell will not receive the transfer, and drop it."""
        logger.warning("Cell %r refuses stream %s: %s", self.name, io.sid, exc)
        etype, msg = type(exc).__name__, str(exc)
        io.post(Control(kind="error", role="rx", sender=self.name, etype=etype, msg=msg))
        self.inbox.done(eid)

    def _done(self, worker: RxWorker) -> None:
        try:
            if not worker.rx.abandoned:  # else left pending: a cell of this name resumes it
                self._settle(worker.rx.sid)
                self.inbox.done(worker.entry_id)
        except Exception:  # runs at the end of a worker thread: log, never raise
            logger.warning(
                "Could not settle the announcement of stream %s.", worker.rx.sid, exc_info=True
            )
        finally:
            # Let go of the worker (and a blob its future holds) now: pruning at the next
            # inbox read came after the next transfer started, so two blobs were alive.
            # Its thread, about to end, is still joined on close.
            with self._lock:
                if self._rx.get(worker.rx.sid) is worker:
                    del self._rx[worker.rx.sid]
                self._ending.append(worker.thread)

"""``RedisStreamableEngine``: NVFlare's ``StreamableEngine`` over a :class:`StreamCell`.

Small messages (objects and replies up to ``inline_limit`` bytes, end and abort notices)
are entries in each cell's mailbox stream, one ``XADD`` per target; larger or
``secure=True`` objects and replies ride the cell's byte streams: one ``send_blob`` to
all targets, so the bytes go into Redis once, read straight out of the serializer's
buffers (numpy arrays are not copied into a pickle). Worker threads named
``fw-obj-<cell>-<n>`` share the mailbox through a consumer group and run the consumers
of what they read, so no message is handed between threads; objects that arrived as byte
streams are consumed in the cell's receiving thread. A ``stream_objects`` call reads its
own replies (mailbox ``fw:cell:{<cell>}:replies:<tx>``) in the caller's thread. The
engine does not own the cell or its connection. The receiving side (workers, dispatch,
replies) is :mod:`framework.objects._engine_receiving`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from framework.cell import Message, StreamCell, StreamFuture
from framework.cell.sender import TxTask
from framework.exceptions import ClosedError, ConfigurationError, FrameworkError
from framework.objects._engine_receiving import EngineReceiving
from framework.objects.api import ConsumerFactory, ObjectProducer, StreamableEngine
from framework.objects.config import EngineConfig
from framework.objects.context import FLContext, FLContextKey
from framework.objects.envelope import (
    BLOB_HEADER,
    ENVELOPE_FIELD,
    PAYLOAD_FIELD,
    Envelope,
    check_route,
    seal_payload,
)
from framework.objects.mailbox import Mailbox, each_key, post
from framework.objects.receiver import Receiver, Registration
from framework.objects.replies import Replies
from framework.objects.sending import ObjectStream, Reach
from framework.objects.session import ReplySlots

__all__ = ["OBJECTS_CHANNEL", "RedisStreamableEngine"]

logger = logging.getLogger(__name__)

#: Cell channel and topic of object-protocol byte streams.
OBJECTS_CHANNEL = "fw.objects"
_TOPIC = "msg"
#: Seconds the read sent along with an object waits for its replies (the wait goes on).
_FIRST_WAIT = 0.05


class RedisStreamableEngine(EngineReceiving, StreamableEngine):
    """Streams objects between cells; both the sending and the receiving side.

    Args:
        cell: The cell whose name this engine answers to; not closed by the engine.
        config: Inline limit, idle timeout, TTL, worker count, close timeout and the
            clock skew allowed between cells.
        secret: Shared HMAC key: every payload is signed, and unsigned or mis-signed
            ones are refused before anything is unpickled.
        allow_pickle: If False, payloads whose serializer unpickles are refused.
        fl_ctx: The receiving side's context; its run abort signal (if any) ends
            sessions here with TASK_ABORTED.

    Raises:
        BackendError: If Redis fails while the mailbox is created (nothing is left
            behind).
        ClosedError: If the cell or its connection is closed (nothing is created).
    """

    def __init__(
        self,
        cell: StreamCell,
        *,
        config: EngineConfig | None = None,
        secret: bytes | None = None,
        allow_pickle: bool = True,
        fl_ctx: FLContext | None = None,
    ) -> None:
        self.cell = cell
        self.name = cell.name
        self.conn = cell.conn
        self.config = config or EngineConfig()
        self.resend_after = self.config.resend_after
        self.fl_ctx = fl_ctx or FLContext()
        self.fl_ctx.set_prop(FLContextKey.IDENTITY_NAME, self.name, private=False)
        self._secret = secret
        self._allow_pickle = allow_pickle
        self._stop = threading.Event()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next_expiry = 0.0
        # Reads ride out dropped connections for as long as a session may stay idle.
        patience = self.config.idle_timeout
        self._replies = Replies(
            self.conn, self.name, self.config.ttl, self._open_payload, self._stop, patience
        )
        self._outgoing: list[StreamFuture] = []  # byte streams of replies, cancelled on close
        self._mailbox = Mailbox(
            self.conn,
            self.conn.keys.mailbox(self.name),
            self.config.ttl,
            patience=patience,
            stop=self._stop,
        )
        self._receiver = Receiver(
            self.name,
            self._reply,
            self.config.idle_timeout,
            abort_signal=self.fl_ctx.get_run_abort_signal(),
            max_clock_skew=self.config.max_clock_skew,
        )
        self._threads = [
            threading.Thread(
                target=self._work, args=(i,), name=f"fw-obj-{self.name}-{i}", daemon=True
            )
            for i in range(self.config.workers)
        ]
        # First, so a closed cell is refused before the mailbox exists: a mailbox
        # without a reader would make senders wait out their timeouts.
        cell.register_blob_cb(OBJECTS_CHANNEL, _TOPIC, self._on_blob)
        try:
            self._mailbox.create()
            self._mark_closed(False)
            for thread in self._threads:
                thread.start()
        except BaseException:
            self._abandon()
            raise

    # -- the StreamableEngine API --------------------------------------------------------

    def stream_objects(
        self,
        channel: str,
        topic: str,
        stream_ctx: dict[str, Any],
        targets: list[str],
        producer: ObjectProducer,
        fl_ctx: FLContext,
        optional: bool = False,
        secure: bool = False,
    ) -> tuple[str, Any]:
        """Send the producer's objects to ``targets``; see :meth:`StreamableEngine.stream_objects`.

        Every object reaches each target once per sequence number; each round hands
        ``process_replies`` exactly one reply per target (an error reply for a target
        that failed, has no engine, ended its session or did not answer in time). The
        abort signal, checked at least every 50 ms while waiting, stops the loop and
        the targets are told (their consumers are finalized with TASK_ABORTED).

        Returns:
            ``(rc, result)``: ``(OK, result)``, ``(OK, None)`` after ``produce`` returned
            None, or ``(TASK_ABORTED, None)``. After a normal end, ``rc`` is OK only if
            every target that was sent an object confirmed that it finalized with OK;
            otherwise it is the first failing target's code (``BAD_REQUEST_DATA`` for
            lost objects, ``TIMEOUT``, ``COMMUNICATION_ERROR``, ...), with the result.

        Raises:
            ClosedError: If the engine is shut down.
            ConfigurationError: If ``targets`` is empty or names no valid cell, the
                channel or topic is not a string of at most 512 characters, an argument
                has the wrong type (checked before ``produce`` is called), or ``produce``
                returned something other than a ``(Shareable, positive timeout)`` pair.
            SerializationError: If an object cannot be serialized.
            EncryptionError: If ``secure`` is True and the cell has no key (raised when
                the first object is sent).
            Exception: Whatever the producer's ``produce`` or ``process_replies``
                raised, unchanged; the targets are told the stream was aborted first
                (they finalize with ``TASK_ABORTED``).
        """
        self._check_open()
        ctx = stream_ctx if stream_ctx is not None else {}
        run = ObjectStream(self, channel, topic, ctx, targets, producer, fl_ctx, optional, secure)
        for target in run.targets:  # the key schema's own check, before anything is produced
            self.conn.keys.mailbox(target)
        return run.run()

    def register_stream_processing(
        self,
        channel: str,
        topic: str,
        factory: ConsumerFactory,
        stream_done_cb: Any = None,
        **cb_kwargs: Any,
    ) -> None:
        """Handle new sessions on ``channel``/``topic`` with consumers from ``factory``.

        Raises:
            ClosedError: If the engine is shut down.
            ConfigurationError: If the channel or topic is not a string of at most 512
                characters, ``factory`` is not a ConsumerFactory or the callback is not
                callable.
        """
        self._check_open()
        check_route(channel, topic)
        if not isinstance(factory, ConsumerFactory):
            raise ConfigurationError(f"factory must be a ConsumerFactory, not {factory!r}.")
        if stream_done_cb is not None and not callable(stream_done_cb):
            raise ConfigurationError(f"stream_done_cb must be callable, not {stream_done_cb!r}.")
        self._receiver.register(channel, topic, Registration(factory, stream_done_cb, cb_kwargs))

    def shutdown_streamer(self) -> None:
        """Stop: abort running sends, finalize open sessions (TASK_ABORTED), join threads.

        Idempotent, and it never raises: every step runs whatever the state of Redis or
        the connection (closed first, say), so every open session is finalized exactly
        once. Deletes this engine's mailbox (if Redis can still be reached); the cell and
        connection stay open.
        """
        with self._lock:
            if self._stop.is_set():
                return
            self._stop.set()
        deadline = time.monotonic() + self.config.close_timeout
        try:
            self._join_workers(deadline)
        finally:
            # Sessions are finalized even if joining failed: they are promised it.
            self._receiver.close(max(0.0, deadline - time.monotonic()))
            self._release()
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            logger.warning("Engine %r closed but threads %s are still running.", self.name, alive)

    def _join_workers(self, deadline: float) -> None:
        for _ in self._threads:  # one wake-up entry per reading thread (never raises)
            self._mailbox.wake()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _release(self) -> None:
        """Cancel outgoing byte streams and delete the mailbox; never raises."""
        with self._lock:
            pending, self._outgoing = self._outgoing, []
        for future in pending:
            try:
                future.cancel()
            except FrameworkError as exc:  # the connection may be closed already
                logger.warning("Engine %r could not cancel a reply stream: %s", self.name, exc)
        self._mailbox.delete()
        self._mark_closed(True)

    def _mark_closed(self, closed: bool) -> None:
        """Say (or unsay) that this engine shut down, for senders that find no mailbox.

        A sender tells a target that shut down (fail at once) from one whose mailbox
        Redis lost (a restart without persistence: its engine makes it again within a
        second, so the object is sent again). Never raises when closing: the mark then
        only makes senders wait out their round.
        """
        key = self.conn.keys.engine_closed(self.name)
        try:
            with self.conn.mapped_errors(f"mark engine {self.name!r} closed", command="SET"):
                if closed:
                    self.conn.client.set(key, b"1", px=self._mailbox.ttl_ms)
                else:
                    self.conn.client.delete(key)
        except FrameworkError as exc:
            if not closed:
                raise
            logger.warning("Engine %r could not leave its closed mark: %s", self.name, exc)

    def closed(self, targets: list[str]) -> list[bool]:
        """Per target, whether its engine shut down (it left its mark).

        Raises:
            BackendError: If Redis fails.
        """
        keys = [self.conn.keys.engine_closed(t) for t in targets]
        return [ok is True for ok in each_key(self.conn, keys, "check", "exists")]

    def alive(self, targets: list[str]) -> list[bool]:
        """Per target, whether a live cell holds its name (its lease); True if Redis fails.

        Raises:
            BackendError: If Redis fails (on a cluster: for every target).
        """
        keys = [self.conn.keys.receiver(t) for t in targets]
        return [ok is not False for ok in each_key(self.conn, keys, "check", "exists")]

    def give_up(self, future: StreamFuture, target: str, why: str) -> None:
        """Let the byte stream of ``future`` go on without ``target``, which is gone."""
        task = future.task_handle
        if isinstance(task, TxTask):
            task.give_up_on(target, why)

    def _abandon(self) -> None:
        """Undo a constructor that failed after registering: stop, and leave no mailbox."""
        self._stop.set()  # the blob callback registered with the cell now ignores all
        self._mailbox.delete()

    def close(self) -> None:
        """Same as :meth:`shutdown_streamer`."""
        self.shutdown_streamer()

    # -- the Link the sending loop uses ----------------------------------------------------

    def stopping(self) -> bool:
        """Whether the engine is shutting down."""
        return self._stop.is_set()

    def open_replies(self, tx: str) -> None:
        """Create the reply mailbox of session ``tx``."""
        self._replies.open(tx)

    def close_replies(self, tx: str) -> None:
        """Delete the reply mailbox of session ``tx``."""
        self._replies.close(tx)

    def expect(self, tx: str, slots: ReplySlots | None) -> None:
        """Route replies of session ``tx`` to ``slots`` (None stops routing)."""
        self._replies.expect(tx, slots)

    def collect(self, tx: str, block: float) -> None:
        """Read the replies of session ``tx`` (in the caller's thread), up to ``block`` s."""
        self._replies.collect(tx, block)

    def send(
        self, env: Envelope, obj: Any, targets: list[str], secure: bool, optional: bool
    ) -> tuple[dict[str, Reach], StreamFuture | None]:
        """Send ``obj`` under ``env`` to ``targets``.

        Returns:
            Per target whether an engine listens there (or, on a cluster, the error of
            the node holding its mailbox while other nodes answered), and the byte
            stream's future when the payload went as one.

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
            BackendError: If Redis fails (on a cluster: for every target).
            StreamError: If the byte stream cannot start (e.g. no key for ``secure``).
        """
        payload = seal_payload(env, obj, self._secret)
        keys = [self._box_of(env, t) for t in targets]
        if not secure and payload.nbytes <= self.config.inline_limit:
            fields = {ENVELOPE_FIELD: env.model_dump_json(), PAYLOAD_FIELD: self.conn.bulk(payload)}
            return dict(zip(targets, self._post(env, keys, fields), strict=True)), None
        checked = each_key(self.conn, keys, "check", "exists")  # whether mailboxes exist
        listening = dict(zip(targets, checked, strict=True))
        live = [t for t, ok in listening.items() if ok is True]  # an error is truthy
        if not live:
            return listening, None
        message = Message({BLOB_HEADER: env.model_dump(mode="json")}, list(payload.parts))
        future = self.cell.send_blob(OBJECTS_CHANNEL, _TOPIC, live, message, secure, optional)
        return listening, future

    def _post(self, env: Envelope, keys: list[str], fields: dict[bytes, Any]) -> Sequence[Reach]:
        """Append to mailboxes, in the same round trip as a read when one comes next."""
        # Not on a cluster: the write and the read would go to different nodes.
        if env.kind == "reply" and (outbox := getattr(self._local, "outbox", None)) is not None:
            outbox.append((keys[0], fields))  # sent with this worker's next read
            return [True]
        if env.kind == "data" and not self.conn.is_cluster:
            writes = [(key, fields) for key in keys]
            # Reconnects for no longer than the sender waits for this object's replies.
            written = self._replies.post_and_collect(env.tx, writes, _FIRST_WAIT, env.timeout)
            if written is not None:
                return written
        return post(self.conn, keys, fields)

    def _box_of(self, env: Envelope, target: str) -> str:
        """Where a message for ``target`` goes: its mailbox, or for a reply the session's."""
        keys = self.conn.keys
        return keys.replies(target, env.tx) if env.kind == "reply" else keys.mailbox(target)

    # -- lifecycle ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._stop.is_set():
            raise ClosedError(f"The object-protocol engine of cell {self.name!r} is shut down.")

    def __enter__(self) -> RedisStreamableEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown_streamer()

    def __repr__(self) -> str:
        state = " shut down" if self._stop.is_set() else ""
        return f"<RedisStreamableEngine {self.name!r}{state}>"

"""The receiving side of :class:`~framework.objects.RedisStreamableEngine` (a mixin).

Worker threads read the cell's mailbox and run what they read themselves: consumers
included, so no message is handed between threads, and each reply goes out with the
worker's next read (one round trip). Objects that arrived as byte streams are
dispatched in the cell's receiving thread instead. With a secret, a message is verified
before it reaches a session: one not signed by a holder of the secret gets no reply.
The sessions themselves are :class:`~framework.objects.receiver.Receiver`'s (no I/O).
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from framework._failures import RepeatedFailure
from framework.cell import StreamFuture
from framework.connection import RedisConnection
from framework.exceptions import (
    BackendError,
    FrameworkError,
    FramingError,
    SecurityError,
    SerializationError,
)
from framework.objects._mail_upkeep import Write
from framework.objects.envelope import (
    BLOB_HEADER,
    PAYLOAD_FIELD,
    Envelope,
    addressed_to,
    decode_envelope,
    open_payload,
    verify_payload,
)
from framework.objects.mailbox import WAKE_FIELD, Mailbox, post
from framework.objects.receiver import LoadFn, Receiver
from framework.objects.replies import Replies, envelope_of
from framework.objects.sending import Reach
from framework.objects.shareable import ReturnCode, Shareable, error_reply

__all__ = ["EngineReceiving"]

# The engine's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.objects.engine")

#: Seconds between looks for idle receiving sessions.
_EXPIRE_EVERY = 0.5
#: Seconds a reply whose reply mailbox is missing is tried again: its sender makes the
#: mailbox again within a second after Redis lost it.
_GONE_PATIENCE = 3.0
#: Seconds between two tries of a reply.
_REPLY_RETRY = 0.25


class EngineReceiving:
    """Mailbox workers, byte-stream arrivals, dispatch to sessions, and replies.

    The engine's ``__init__`` sets every attribute declared here.
    """

    name: str
    conn: RedisConnection
    _secret: bytes | None
    _allow_pickle: bool
    _stop: threading.Event
    _local: threading.local
    _lock: threading.Lock
    _next_expiry: float
    _replies: Replies
    _outgoing: list[StreamFuture]
    _mailbox: Mailbox
    _receiver: Receiver

    if TYPE_CHECKING:  # the engine's sending side

        def send(
            self, env: Envelope, obj: Any, targets: list[str], secure: bool, optional: bool
        ) -> tuple[dict[str, Reach], StreamFuture | None]: ...

    def _work(self, index: int) -> None:
        """A worker: reads the mailbox and runs what it reads (consumers included)."""
        reader = self._mailbox.reader(f"{self.name}-{index}")
        # One traceback per kind of failure, not one per turn.
        failures = RepeatedFailure(logger, f"Worker {index} reading the mailbox of {self.name!r}")
        # Replies to what this worker read go out with its next read: one round trip.
        outbox: list[Write] | None = [] if not self.conn.is_cluster else None
        self._local.outbox = outbox
        while not self._stop.is_set():
            writes = list(outbox or [])
            try:
                if outbox:
                    outbox.clear()
                entries = reader.read(writes=writes)
                failures.succeeded()
                for eid, fields in entries:
                    self._on_entry(eid, fields)
            except Exception as exc:  # noqa: BLE001 - thread boundary: logged (RepeatedFailure), retried
                failures.failed(exc)
                if outbox is not None:
                    outbox[:0] = writes  # again with the next read (a copy is harmless)
                self._stop.wait(0.5)
            self._maybe_expire()
        reader.close()
        self._flush(outbox)

    def _flush(self, outbox: list[Write] | None) -> None:
        """Send the replies a stopping worker still holds."""
        if outbox:
            try:
                for key, fields in outbox:
                    post(self.conn, [key], fields)
            except FrameworkError as exc:
                logger.warning("Engine %r could not send its last replies: %s", self.name, exc)

    def _maybe_expire(self) -> None:
        """End idle sessions; whichever worker comes by first does it (a busy one can't)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_expiry:
                return
            self._next_expiry = now + _EXPIRE_EVERY
        self._receiver.expire_idle()

    def _on_entry(self, eid: bytes, fields: dict[bytes, Any]) -> None:
        if WAKE_FIELD in fields:
            return
        env = envelope_of(eid, fields, self._mailbox.key)
        if env is not None:
            self._dispatch(env, fields.get(PAYLOAD_FIELD, b""))

    def _on_blob(self, future: StreamFuture) -> None:
        what = f"byte stream {future.get_stream_id()}"
        if self._stop.is_set():
            logger.warning("Engine %r is shut down: ignoring %s.", self.name, what)
            return
        try:
            env = decode_envelope((future.get_headers() or {}).get(BLOB_HEADER), what)
        except FrameworkError as exc:
            logger.warning("Dropping an unreadable message: %s", exc)
            return
        # Consumed right here, in the cell's thread for this transfer; kept for later if
        # its session is busy, since a byte stream is not sent again.
        self._dispatch(env, future.result(), keep=True)

    def _dispatch(self, env: Envelope, payload: Any, keep: bool = False) -> None:
        if not addressed_to(env, self.name):
            return
        if env.kind == "reply":  # came as a byte stream (mailbox replies are collected)
            self._replies.deliver(env, payload)
        elif env.kind == "data":
            load = self._loader(env, payload)
            if load is not None:
                self._receiver.on_data(env, load, keep)
        elif self._verified(env, payload):
            self._receiver.on_end(env)

    def _loader(self, env: Envelope, payload: Any) -> LoadFn | None:
        """How the receiver gets the object of ``env``; None to ignore the message.

        Without a secret nothing can be authenticated: the payload is opened when its
        turn comes, and one that fails gets a BAD_REQUEST_DATA reply. With a secret it
        is verified first: a message that is not signed by a holder of the secret gets
        no reply and touches no session, because any reply, however genuine, would fill
        its sender's slot for that sequence number before the real object's reply.
        """
        if self._secret is None:
            return partial(open_payload, env, payload, None, self._allow_pickle)
        try:
            obj = open_payload(env, payload, self._secret, self._allow_pickle)
        except (SecurityError, FramingError) as exc:
            logger.warning("Ignoring the %s: %s", env.describe(), exc)
            return None
        except FrameworkError as exc:  # signed, so sent by a peer: it hears why
            return partial(_raise, exc)
        return lambda: obj

    def _open_payload(self, env: Envelope, payload: Any) -> Any:
        return open_payload(env, payload, self._secret, self._allow_pickle)

    def _verified(self, env: Envelope, payload: Any) -> bool:
        """Whether an end or abort notice verifies (its payload, None, is not deserialized).

        Deserializing it would gain nothing, and an engine with ``allow_pickle=False``
        would refuse a sender's pickled None: the sender would wait out its timeout.
        """
        try:
            verify_payload(env, payload, self._secret)
        except FrameworkError as exc:
            logger.warning("Ignoring the %s: %s", env.describe(), exc)
            return False
        return True

    def _reply(self, env: Envelope, reply: Shareable, ended: bool) -> None:
        """Send ``reply`` to the sender of the object ``env`` (from a worker thread).

        A reply that Redis failed (unreachable, restarting) is sent again until the
        object's timeout, and one whose reply mailbox is missing (Redis lost it; its
        sender makes it again within a second) for :data:`_GONE_PATIENCE` seconds: an
        object that came as a byte stream is never sent again, so its sender would
        wait out its timeout for a reply that was made.
        """
        renv = Envelope(
            kind="reply",
            tx=env.tx,
            seq=env.seq,
            origin=self.name,
            to=(env.origin,),
            at=time.time(),
            ended=ended,
            secure=env.secure,
        )
        now = time.monotonic()
        deadline, gone_by = now + (env.timeout or _GONE_PATIENCE), now + _GONE_PATIENCE
        failures = RepeatedFailure(logger, f"Replying to the {env.describe()}")
        while True:
            outcome = self._send_reply(env, renv, reply)
            if outcome is True or outcome is None:
                return
            now = time.monotonic()
            if now >= (deadline if isinstance(outcome, BackendError) else gone_by):
                break
            if isinstance(outcome, BackendError):
                failures.failed(outcome)
            if self._stop.wait(_REPLY_RETRY):
                break
        why = outcome if isinstance(outcome, BackendError) else "its sender is gone."
        logger.warning("Could not reply to the %s: %s", env.describe(), why)

    def _send_reply(self, env: Envelope, renv: Envelope, reply: Shareable) -> Reach | None:
        """One try: True (sent), False (no reply mailbox), a Redis error, None (given up)."""
        try:
            try:
                reached, future = self.send(renv, reply, [env.origin], env.secure, False)
            except SerializationError as exc:
                logger.warning("The reply to the %s cannot be serialized: %s", env.describe(), exc)
                fallback = error_reply(
                    ReturnCode.EXECUTION_EXCEPTION, f"Unserializable reply: {exc}"
                )
                reached, future = self.send(renv, fallback, [env.origin], env.secure, False)
        except BackendError as exc:
            return exc
        except FrameworkError as exc:
            logger.warning("Could not reply to the %s: %s", env.describe(), exc)
            return None
        if future is not None:
            with self._lock:
                self._outgoing = [f for f in self._outgoing if not f.done()] + [future]
        return reached.get(env.origin, False)


def _raise(exc: BaseException) -> Any:
    raise exc

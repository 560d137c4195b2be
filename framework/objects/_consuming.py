"""Inside one receiving session: apply an object in sequence, run the consumer, end once.

:class:`~framework.objects.receiver.Receiver` routes messages to sessions and keeps the
session table; this mixin is what runs while a session's lock is held. User code
(``get_consumer``, ``consume``, ``finalize``, ``stream_done_cb``, ``return_consumer``)
runs only here, and each call is guarded: a raising consumer ends its session with
the reason sent to the sender instead of taking a worker thread down, and the three
end calls run exactly once each, even if one before them raised. No I/O.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from framework.exceptions import DeserializationError, FrameworkError
from framework.objects.api import ObjectConsumer
from framework.objects.context import FLContext, StreamContextKey
from framework.objects.envelope import Envelope
from framework.objects.session import SeqTracker, Tombstones, Verdict
from framework.objects.shareable import ReturnCode, Shareable, error_reply, make_reply

if TYPE_CHECKING:
    from framework.objects.receiver import LoadFn, Registration, ReplyFn

__all__ = ["Consuming", "Session"]

# The receiver's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.objects.receiver")


@dataclass(eq=False)
class Session:
    """One session of a receiver: its consumer, sequence and state."""

    key: tuple[str, str]
    reg: Registration
    ctx: dict[str, Any]
    fl_ctx: FLContext
    last_active: float
    #: When the session's first object was sent (the sender's clock).
    started: float
    consumer: ObjectConsumer | None = None
    seq: SeqTracker = field(default_factory=SeqTracker)
    lock: threading.Lock = field(default_factory=threading.Lock)
    busy: bool = False
    ended: bool = False
    #: Objects found missing (a sequence gap), for the error the session ends with.
    lost: str | None = None
    #: An end or abort that came while consume ran (applied when it returns).
    pending_end: Envelope | None = None
    #: Objects that came as byte streams while consume ran, by sequence number: they
    #: cannot be sent again, so they are applied when it returns.
    held: dict[int, tuple[Envelope, LoadFn]] = field(default_factory=dict)

    def name(self) -> str:
        return f"session {self.key[1]} from {self.key[0]!r}"


class Consuming:
    """Applying objects to sessions and ending them, for a :class:`Receiver`.

    The receiver's ``__init__`` sets every attribute declared here.
    """

    name: str
    _reply: ReplyFn
    _abort: Any
    _clock: Callable[[], float]
    _sessions: dict[tuple[str, str], Session]
    _tombstones: Tombstones
    _lock: threading.Lock

    def _apply(self, session: Session, env: Envelope, load: LoadFn) -> None:
        if session.ended:  # it ended (or never started) while this object waited for it
            with self._lock:
                answer = self._tombstones.answer(session.key, env.seq)
            self._reply(env, answer or session.seq.gap_reply(env.seq), answer is not None)
            return
        session.last_active = self._clock()
        verdict = session.seq.verdict(env.seq)
        if verdict is Verdict.RETRY:
            logger.info("The %s is a retry: answered again, not applied.", env.describe())
            assert session.seq.last_reply is not None
            self._reply(env, session.seq.last_reply, False)
        elif verdict is not Verdict.APPLY:
            logger.warning("The %s is out of sequence (%s).", env.describe(), verdict.value)
            gap = verdict is Verdict.GAP
            if gap and session.lost is None:
                session.lost = f"objects {session.seq.expected}..{env.seq - 1} never arrived"
            answer = session.seq.gap_reply(env.seq) if gap else session.seq.stale_reply(env.seq)
            self._reply(env, answer, False)
        else:
            session.busy = True
            try:
                self._consume(session, env, load)
            finally:
                session.busy = False
                session.last_active = self._clock()

    def _consume(self, session: Session, env: Envelope, load: LoadFn) -> None:
        try:
            obj = _object_of(load(), first=env.seq == 0)
        except FrameworkError as exc:
            logger.warning("Refusing the %s: %s", env.describe(), exc)
            if session.consumer is None:
                self._drop(session)  # nothing was started: the sender may send object 0 again
            self._reply(env, error_reply(ReturnCode.BAD_REQUEST_DATA, str(exc)), False)
            return
        if isinstance(obj, tuple):
            obj, ctx = obj
            session.ctx.update(ctx or {})
            session.ctx[StreamContextKey.CHANNEL] = env.channel
            session.ctx[StreamContextKey.TOPIC] = env.topic
        if session.consumer is None and not self._start(session, env):
            return
        go_on, reply = self._call_consume(session, env, obj)
        session.seq.applied(reply)
        if not go_on:
            self._end(session, reply.get_return_code())
        self._reply(env, reply, not go_on)

    def _start(self, session: Session, env: Envelope) -> bool:
        try:
            consumer = session.reg.factory.get_consumer(session.ctx, session.fl_ctx)
            if not isinstance(consumer, ObjectConsumer):
                raise TypeError(f"get_consumer returned {type(consumer).__name__}")
        except Exception as exc:  # user code: the sender hears why
            logger.exception("No consumer for the %s.", env.describe())
            self._drop(session)
            with self._lock:
                self._tombstones.add(
                    session.key, 0, None, ReturnCode.EXECUTION_EXCEPTION, session.started
                )
            reason = f"The consumer factory failed: {type(exc).__name__}: {exc}"
            self._reply(env, error_reply(ReturnCode.EXECUTION_EXCEPTION, reason), True)
            return False
        session.consumer = consumer
        return True

    def _call_consume(self, session: Session, env: Envelope, obj: Shareable) -> tuple[bool, Any]:
        if self._abort is not None and self._abort.triggered:
            return False, error_reply(ReturnCode.TASK_ABORTED, f"Cell {self.name!r} is aborting.")
        assert session.consumer is not None
        try:
            result = session.consumer.consume(obj, session.ctx, session.fl_ctx)
        except Exception as exc:  # user code: the sender gets EXECUTION_EXCEPTION
            logger.exception("consume raised on the %s.", env.describe())
            reason = f"consume raised {type(exc).__name__}: {exc}"
            return False, error_reply(ReturnCode.EXECUTION_EXCEPTION, reason)
        if not isinstance(result, tuple | list) or len(result) != 2:
            reason = (
                f"{type(session.consumer).__name__}.consume returned {result!r:.80}; it must "
                "return a (continue, reply) pair"
            )
            logger.error("%s, on the %s.", reason, env.describe())
            return False, error_reply(ReturnCode.EXECUTION_EXCEPTION, reason)
        go_on, reply = result
        if reply is None:
            reply = make_reply(ReturnCode.OK)
        elif not isinstance(reply, Shareable):
            reason = f"consume returned a {type(reply).__name__}, not a Shareable"
            return False, error_reply(ReturnCode.EXECUTION_EXCEPTION, reason)
        return bool(go_on), reply

    def _drop(self, session: Session) -> None:
        session.ended = True
        with self._lock:
            if self._sessions.get(session.key) is session:
                del self._sessions[session.key]

    def _end(self, session: Session, rc: str) -> None:
        """Finalize once: finalize, stream_done_cb, return_consumer (call under its lock)."""
        if session.ended:
            return
        self._drop(session)
        with self._lock:
            last = session.seq.expected - 1
            self._tombstones.add(session.key, last, session.seq.last_reply, rc, session.started)
        consumer = session.consumer
        if consumer is None:
            return
        session.ctx[StreamContextKey.RC] = rc
        reg, ctx, fl_ctx = session.reg, session.ctx, session.fl_ctx
        _guarded("finalize", session, lambda: consumer.finalize(ctx, fl_ctx))
        if reg.done_cb is not None:
            done_cb = reg.done_cb
            _guarded("stream_done_cb", session, lambda: done_cb(ctx, fl_ctx, **reg.cb_kwargs))
        _guarded(
            "return_consumer", session, lambda: reg.factory.return_consumer(consumer, ctx, fl_ctx)
        )
        logger.debug("Finalized %s with %s.", session.name(), rc)


def _object_of(payload: Any, first: bool) -> Any:
    """Check the payload's shape: ``(Shareable, ctx-or-None)``; the ctx only on object 0."""
    if (
        not isinstance(payload, tuple)
        or len(payload) != 2
        or not isinstance(payload[0], Shareable)
        or not isinstance(payload[1], dict | None)
    ):
        kind = type(payload).__name__
        raise DeserializationError(f"The payload is a {kind}, not (Shareable, context).")
    return payload if first else payload[0]


def _guarded(what: str, session: Session, call: Callable[[], Any]) -> None:
    # Each step runs even if the one before raised: all three are promised exactly once.
    try:
        call()
    except Exception:
        logger.exception("%s raised for %s.", what, session.name())

"""The receiving side of the object protocol: sessions, consumers and their end.

:class:`Receiver` keeps one session per (sender, session id). The first object of a
session gets a consumer from the factory registered for its channel and topic; later
objects go to that consumer in sequence order (a retried number gets the earlier reply,
a gap is reported). A session ends on ``consume`` returning ``False`` or raising, on the
sender's ``end``/``abort``, after ``idle_timeout`` seconds without a message (the sender
vanished), or when the engine shuts down; then ``finalize``, ``stream_done_cb`` and
``return_consumer`` run exactly once each, with ``stream_ctx[StreamContextKey.RC]`` set.
Replies leave through the ``reply`` callable the engine provides. This module does no
I/O: it is called from the engine's worker threads. What runs inside a session (its
objects applied, its consumer called, its end) is :mod:`framework.objects._consuming`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framework.objects._consuming import Consuming, Session
from framework.objects.api import ConsumerFactory
from framework.objects.context import FLContext, FLContextKey, StreamContextKey
from framework.objects.envelope import Envelope
from framework.objects.session import SeqTracker, Tombstones
from framework.objects.shareable import ReturnCode, Shareable, error_reply, make_reply

__all__ = ["Receiver", "Registration"]

logger = logging.getLogger(__name__)

#: ``reply(envelope_of_the_object, reply, session_ended)``
ReplyFn = Callable[[Envelope, Shareable, bool], None]
#: Returns the verified, deserialized payload of an object (raises FrameworkError).
LoadFn = Callable[[], Any]
#: Seconds between looks at whether a session's lock is held by running user code.
_LOOK_EVERY = 0.01
#: Most objects a busy session keeps for later (see :meth:`Receiver.on_data`). The
#: sender sends one object per round, so more means rounds timed out one after another.
MAX_HELD = 16


@dataclass(frozen=True)
class Registration:
    """What :meth:`StreamableEngine.register_stream_processing` registered."""

    factory: ConsumerFactory
    done_cb: Callable[..., Any] | None = None
    cb_kwargs: dict[str, Any] = field(default_factory=dict)


class Receiver(Consuming):
    """Sessions of the streams that reach one engine.

    Args:
        name: The engine's cell name (``fl_ctx.get_identity_name()`` of its sessions).
        reply: Sends a reply to the object's sender.
        idle_timeout: Seconds without a message after which a session is ended (TIMEOUT).
        abort_signal: The run's abort signal on this side (ends sessions with TASK_ABORTED).
        max_clock_skew: Seconds the senders' clocks may be off from this one. A first
            object older than its timeout plus this, or sent before this receiver
            started less this, starts no session: it is a replay or long overdue.
        clock: Monotonic clock (injectable for tests).
        wall: Clock comparable with the senders' (seconds since the epoch).
    """

    def __init__(
        self,
        name: str,
        reply: ReplyFn,
        idle_timeout: float,
        abort_signal: Any = None,
        max_clock_skew: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._reply = reply
        self.idle_timeout = idle_timeout
        self._abort = abort_signal
        self._clock = clock
        self._wall = wall
        self.max_clock_skew = max_clock_skew
        self._registry: dict[tuple[str, str], Registration] = {}
        self._sessions: dict[tuple[str, str], Session] = {}
        self._tombstones = Tombstones(floor=wall() - max_clock_skew)
        self._lock = threading.Lock()
        # Set by close(): a session still consuming then is finalized when consume returns.
        self._closing = False

    def register(self, channel: str, topic: str, reg: Registration) -> None:
        """Route new sessions on ``channel``/``topic`` to ``reg``."""
        with self._lock:
            self._registry[(channel, topic)] = reg

    def open_sessions(self) -> int:
        """Number of sessions not yet ended."""
        return len(self._sessions)

    # -- messages ----------------------------------------------------------------------

    def on_data(self, env: Envelope, load: LoadFn, keep: bool = False) -> None:
        """Handle one object: start or find its session, apply it once, reply.

        A message for a session whose consumer is running (or finalizing) is not
        waited for: waiting would hold this worker for as long as the user code runs,
        and the sender's resends would soon hold every worker, starving other
        sessions. A mailbox message is dropped: the sender sends it again, and it is
        answered once the session is free. One that came as a byte stream cannot be
        sent again: with ``keep`` it is kept (up to :data:`MAX_HELD` per session) and
        applied, in sequence order, when consume returns.

        Args:
            env: The object's envelope.
            load: Returns its payload.
            keep: Keep it for later if its session is busy (it cannot be sent again).
        """
        key = (env.origin, env.tx)
        early: Shareable | None = None
        with self._lock:
            session = self._sessions.get(key)
            fresh = session is None
            if session is None and (early := self._refuse_new(env, key)) is None:
                session = self._new_session(env, key)
                # Taken before the table is released: a copy of object 0 waits for it.
                session.lock.acquire()
        if session is None:
            self._reply(env, early or make_reply(ReturnCode.ERROR), True)
            return
        if not fresh and not self._take(session, env):
            if keep and not session.ended:
                self._hold(session, env, load)
                self._settle(session)  # consume may have returned meanwhile
            return
        try:
            self._apply(session, env, load)
            self._apply_held(session)
            self._finish_pending(session)
        finally:
            session.lock.release()
            self._settle(session)

    def _hold(self, session: Session, env: Envelope, load: LoadFn) -> None:
        """Keep an object that came while its session was busy, for :meth:`_apply_held`."""
        with self._lock:
            if len(session.held) >= MAX_HELD and env.seq not in session.held:
                full = True
            else:
                session.held[env.seq] = (env, load)
                full = False
        if full:  # its sender hears of the loss as a sequence gap
            logger.warning(
                "Dropping the %s: %d objects of its session already wait for its consumer.",
                env.describe(),
                MAX_HELD,
            )
        else:
            logger.info("The %s came while its session is busy: kept.", env.describe())

    def _apply_held(self, session: Session) -> None:
        """Apply the objects kept while consume ran, lowest number first (under its lock)."""
        while True:
            with self._lock:
                if not session.held:
                    return
                env, load = session.held.pop(min(session.held))
            self._apply(session, env, load)

    def _take(self, session: Session, env: Envelope) -> bool:
        """Take the session's lock unless user code holds it; False if it was not taken."""
        # Held for bookkeeping only (microseconds), it is worth the wait, not a resend; the
        # holder may go on to run user code (object 0's consume), hence the looks.
        while not session.lock.acquire(timeout=_LOOK_EVERY):
            if session.busy or session.ended:
                logger.debug("The %s came while its session is busy: dropped.", env.describe())
                return False
        return True

    def _settle(self, session: Session) -> None:
        """Apply objects and an end that came while the lock was held, if no one else does.

        Their thread sets ``held`` or ``pending_end`` then calls this; the lock's holder
        calls it after releasing: whichever comes last finds the other's doing.
        """
        while session.held or (session.pending_end is not None and not session.ended):
            if not session.lock.acquire(blocking=False):
                return  # its holder settles after releasing
            try:
                self._apply_held(session)
                self._finish_pending(session)
            finally:
                session.lock.release()

    def _finish_pending(self, session: Session) -> None:
        """End a session whose end, abort or close came while consume ran (under its lock)."""
        if self._closing:  # close() gave up waiting for this consume: finish its job
            self._end(session, ReturnCode.TASK_ABORTED)
        elif session.pending_end is not None:  # checked now: the last object is applied
            self._end(session, self._checked_rc(session, session.pending_end)[0])

    def on_end(self, env: Envelope) -> None:
        """The sender ended (``end``) or aborted (``abort``) a session.

        An ``end`` whose session lost objects (a sequence gap, or fewer objects applied
        than the ``end`` says were sent) ends it with BAD_REQUEST_DATA, never OK. One
        that comes while consume runs is applied when consume returns, without holding
        a worker; an ``end`` is then answered when the sender sends it again.
        """
        key = (env.origin, env.tx)
        with self._lock:
            session = self._sessions.get(key)
            ended_rc = self._tombstones.rc_of(key)
        reply = make_reply(ended_rc or _rc_of(env))
        if session is None and ended_rc is None and env.kind == "end" and env.seq > 0:
            # Objects were sent, none started a session here (the first was refused, or
            # never came): an end confirmed OK would report them applied.
            none = f"The stream ended but none of its {env.seq} object(s) were applied here."
            reply = error_reply(ReturnCode.BAD_REQUEST_DATA, none)
            logger.warning("Answering the %s with BAD_REQUEST_DATA: %s", env.describe(), none)
        elif session is None:
            logger.debug("The %s names no open session.", env.describe())
        elif not self._take(session, env):
            session.pending_end = env
            self._settle(session)  # consume may have returned meanwhile
            return
        else:
            try:
                rc, why = self._checked_rc(session, env)
                reply = make_reply(rc) if why is None else error_reply(rc, why)
                self._end(session, rc)
            finally:
                session.lock.release()
        if env.kind == "end":  # the sender waits until every target has finalized
            self._reply(env, reply, True)

    def _checked_rc(self, session: Session, env: Envelope) -> tuple[str, str | None]:
        """The return code ``env`` (an end or abort) ends ``session`` with, and why not OK."""
        rc = _rc_of(env)
        if env.kind != "end" or rc != ReturnCode.OK:
            return rc, None
        expected = session.seq.expected
        lost = session.lost
        if env.seq > expected:  # an end's seq is the number of objects sent
            lost = f"objects {expected}..{env.seq - 1} of the {env.seq} sent were not applied"
        if lost is None:
            return rc, None
        why = f"The stream ended but {lost}; {session.name()} lost objects."
        logger.warning("Ending %s with %s: %s", session.name(), ReturnCode.BAD_REQUEST_DATA, why)
        return ReturnCode.BAD_REQUEST_DATA, why

    def expire_idle(self) -> int:
        """End every session idle for longer than ``idle_timeout``; return how many."""
        now = self._clock()
        with self._lock:
            idle = [
                s
                for s in self._sessions.values()
                if not s.busy and now - s.last_active > self.idle_timeout
            ]
        ended = 0
        for session in idle:
            if session.lock.acquire(blocking=False):  # busy again: not idle after all
                try:
                    if not session.ended and not session.busy:
                        logger.warning(
                            "Ending %s: no message for %.1f s (the sender is gone).",
                            session.name(),
                            now - session.last_active,
                        )
                        self._end(session, ReturnCode.TIMEOUT)
                        ended += 1
                finally:
                    session.lock.release()
        return ended

    def has_idle(self) -> bool:
        """Whether some session is due for :meth:`expire_idle`."""
        now = self._clock()
        with self._lock:
            return any(
                not s.busy and now - s.last_active > self.idle_timeout
                for s in self._sessions.values()
            )

    def close(self, timeout: float) -> None:
        """End every open session with TASK_ABORTED, waiting up to ``timeout`` for busy ones.

        A session still consuming after ``timeout`` is ended (finalized, its
        ``stream_done_cb`` and ``return_consumer`` called) as soon as its consume returns.
        """
        deadline = self._clock() + timeout
        with self._lock:
            self._closing = True
            sessions = list(self._sessions.values())
        for session in sessions:
            if session.lock.acquire(timeout=max(0.0, deadline - self._clock())):
                try:
                    self._end(session, ReturnCode.TASK_ABORTED)
                finally:
                    session.lock.release()
            else:
                logger.warning(
                    "Closing with %s still consuming; it is finalized when consume returns.",
                    session.name(),
                )

    # -- internals ---------------------------------------------------------------------

    def _refuse_new(self, env: Envelope, key: tuple[str, str]) -> Shareable | None:
        """Why ``env`` cannot start a session (None if it can); call under the table lock."""
        answer = self._tombstones.answer(key, env.seq)
        if answer is not None:
            return answer
        if env.seq != 0:
            logger.warning("The %s reached no open session: its start was lost.", env.describe())
            return SeqTracker().gap_reply(env.seq)
        late = self._late_start(env)
        if late is not None:
            logger.warning("Refusing the %s: %s", env.describe(), late)
            return error_reply(ReturnCode.BAD_REQUEST_DATA, late)
        if (env.channel, env.topic) not in self._registry:
            logger.warning("The %s has no consumer factory registered.", env.describe())
            return error_reply(
                ReturnCode.TOPIC_UNKNOWN,
                f"Cell {self.name!r} has no consumer for {env.channel}/{env.topic}.",
            )
        return None

    def _late_start(self, env: Envelope) -> str | None:
        """Why a first object cannot be new (a copy of an old one), or None."""
        age = self._wall() - env.at
        if self._tombstones.forgotten(env.origin, env.at):
            return (
                f"object 0 of session {env.tx} was sent {age:.0f} s ago, before sessions "
                f"this cell has forgotten: refused as a replayed or overdue start."
            )
        allowed = (env.timeout or 0.0) + self.max_clock_skew
        if age > allowed:
            return (
                f"object 0 of session {env.tx} was sent {age:.0f} s ago, more than its "
                f"timeout ({env.timeout} s) plus the allowed clock skew "
                f"({self.max_clock_skew} s): refused as a replayed or overdue start."
            )
        return None

    def _new_session(self, env: Envelope, key: tuple[str, str]) -> Session:
        fl_ctx = FLContext()
        fl_ctx.set_prop(FLContextKey.IDENTITY_NAME, self.name, private=False)
        fl_ctx.set_prop(FLContextKey.PEER_NAME, env.origin, private=False)
        if self._abort is not None:
            fl_ctx.set_run_abort_signal(self._abort)
        ctx = {StreamContextKey.CHANNEL: env.channel, StreamContextKey.TOPIC: env.topic}
        reg = self._registry[(env.channel, env.topic)]
        session = Session(key, reg, ctx, fl_ctx, self._clock(), started=env.at)
        self._sessions[key] = session
        return session


def _rc_of(env: Envelope) -> str:
    """The return code an end or abort notice carries."""
    return env.rc or (ReturnCode.OK if env.kind == "end" else ReturnCode.TASK_ABORTED)

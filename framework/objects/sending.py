"""The sending loop of ``stream_objects``: produce, send to every target, gather, judge.

One :class:`ObjectStream` runs one call: it asks the producer for an object, sends it to
every target still in the session (the engine writes it once per target as a mailbox
message, or once for all targets as a byte stream), waits for one reply per target
within the producer's timeout while watching the abort signal, fills every missing
reply with an error reply that says why, and lets the producer judge them. However the
loop ends, one ``end`` (normal) or ``abort`` notice goes to the targets, from one place.
This module does no I/O itself: the engine's :class:`Link` does it.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol, TypeAlias

from framework._timeouts import as_seconds
from framework.cell.config import LEASE_S
from framework.cell.types import StreamFuture
from framework.exceptions import (
    BackendError,
    BackendUnavailable,
    ConfigurationError,
    FrameworkError,
    StreamDataLost,
    StreamError,
)
from framework.objects.api import ObjectProducer
from framework.objects.context import FLContext, StreamContextKey
from framework.objects.envelope import Envelope, check_route
from framework.objects.session import ReplySlots
from framework.objects.shareable import ReservedHeaderKey, ReturnCode, Shareable, error_reply

__all__ = ["Link", "ObjectStream", "Reach"]

logger = logging.getLogger(__name__)

#: Per target (mailbox) of a send or check: True (sent, or it exists), False (no engine
#: listens) or, on a cluster, the error of the node holding its mailbox while the other
#: targets' nodes answered.
Reach: TypeAlias = bool | BackendError

#: Longest pause (s) between two looks at the abort signal while replies are awaited.
_ABORT_POLL = 0.05
#: Seconds between two looks at the leases of targets that have not answered yet.
_LEASE_LOOK = 1.0


class Ended(NamedTuple):
    """A target that takes no more objects of the stream: its session ended, or it is gone."""

    #: The return code of its reply that ended the session.
    rc: str
    #: Why, for the error replies filled in for it and the log.
    why: str
    #: The return code of those error replies.
    reply_rc: str = ReturnCode.EARLY_TERMINATION


class Link(Protocol):
    """What the sending loop needs from the engine."""

    name: str
    #: Seconds after which an unanswered mailbox message is sent again.
    resend_after: float

    def stopping(self) -> bool:
        """Whether the engine is shutting down."""

    def send(
        self, env: Envelope, obj: Any, targets: list[str], secure: bool, optional: bool
    ) -> tuple[dict[str, Reach], StreamFuture | None]:
        """Send ``obj`` to ``targets``: who can get it, and the byte stream's future if any."""

    def closed(self, targets: list[str]) -> list[bool]:
        """Per target, whether its engine shut down (rather than Redis losing its mailbox)."""

    def alive(self, targets: list[str]) -> list[bool]:
        """Per target, whether a live cell holds its name (True when Redis cannot tell)."""

    def give_up(self, future: StreamFuture, target: str, why: str) -> None:
        """Let the byte stream of ``future`` go on without ``target``, which is gone."""

    def open_replies(self, tx: str) -> None:
        """Start receiving the replies of session ``tx``."""

    def expect(self, tx: str, slots: ReplySlots | None) -> None:
        """Route replies of session ``tx`` to ``slots`` (None: stop routing)."""

    def collect(self, tx: str, block: float) -> None:
        """Read replies of session ``tx`` into its slots, waiting up to ``block`` seconds."""

    def close_replies(self, tx: str) -> None:
        """Stop receiving the replies of session ``tx``."""


class ObjectStream:
    """One ``stream_objects`` call.

    Args:
        link: The engine.
        channel: App channel.
        topic: App topic.
        stream_ctx: The stream context (CHANNEL and TOPIC are set in it).
        targets: Receiving cells (duplicates dropped).
        producer: Makes objects and judges replies.
        fl_ctx: The run's context (its abort signal is watched).
        optional: Failures are logged at debug level only.
        secure: Objects travel encrypted.

    Raises:
        ConfigurationError: If ``targets`` is empty or holds a non-string.
    """

    def __init__(
        self,
        link: Link,
        channel: str,
        topic: str,
        stream_ctx: dict[str, Any],
        targets: list[str],
        producer: ObjectProducer,
        fl_ctx: FLContext,
        optional: bool,
        secure: bool,
    ) -> None:
        if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
            raise ConfigurationError(f"stream_objects needs a list of cell names, not {targets!r}.")
        # Checked before produce() is first called: nothing is made that cannot be sent.
        check_route(channel, topic, targets)
        if not isinstance(producer, ObjectProducer):
            raise ConfigurationError(f"producer must be an ObjectProducer, not {producer!r}.")
        if not isinstance(fl_ctx, FLContext):
            raise ConfigurationError(f"fl_ctx must be an FLContext, not {fl_ctx!r}.")
        if not isinstance(stream_ctx, dict):
            raise ConfigurationError(f"stream_ctx must be a dict, not {stream_ctx!r}.")
        self.link = link
        self.channel, self.topic = channel, topic
        self.ctx = stream_ctx
        self.ctx[StreamContextKey.CHANNEL] = channel
        self.ctx[StreamContextKey.TOPIC] = topic
        self.targets = list(dict.fromkeys(targets))
        self.producer = producer
        self.fl_ctx = fl_ctx
        self.optional, self.secure = optional, secure
        self.tx = secrets.token_hex(16)
        self.seq = 0
        self.sent = 0  # objects sent: the seq of the end notice, so receivers can count
        self.timeout = 5.0  # the last object's timeout; bounds the wait for end notices
        self.reached: set[str] = set()  # targets that were sent an object
        self.ended: dict[str, Ended] = {}  # target -> why it takes no more objects
        # Target -> why the current object has not reached it yet (its cluster node failed,
        # Redis was unreachable): it is sent again until the round's timeout.
        self.unsent: dict[str, Exception] = {}
        # Of those, targets whose mailbox Redis lost: sent again (by mailbox or as a byte
        # stream of their own) until the round's timeout.
        self.lost: set[str] = set()
        # Target -> when its cell's lease was first seen missing (see _fail_gone).
        self.leaseless: dict[str, float] = {}

    def run(self) -> tuple[str, Any]:
        """Loop until the producer ends the stream, a result is found or abort; see the API."""
        rc, result = ReturnCode.TASK_ABORTED, None
        self.link.open_replies(self.tx)
        try:
            rc, result = self._loop()
        finally:
            try:
                rc = self._close(rc)
            finally:
                self.link.close_replies(self.tx)
        return rc, result

    def _loop(self) -> tuple[str, Any]:
        while not self._aborted():
            obj, timeout = self._produce()
            if obj is None:
                return ReturnCode.OK, None
            self._check(obj, timeout)
            self.timeout = float(timeout)
            replies = self._exchange(obj, self.timeout)
            if replies is None:
                break
            result = self.producer.process_replies(replies, self.ctx, self.fl_ctx)
            if result is not None:  # 0, {} and False are results too
                return ReturnCode.OK, result
            self.seq += 1
        logger.info(
            "Stream %s on %s/%s aborted at object %d.", self.tx, self.channel, self.topic, self.seq
        )
        return ReturnCode.TASK_ABORTED, None

    def _produce(self) -> tuple[Any, Any]:
        made = self.producer.produce(self.ctx, self.fl_ctx)
        if not isinstance(made, tuple) or len(made) != 2:
            raise ConfigurationError(
                f"{type(self.producer).__name__}.produce returned {made!r:.80}; it must "
                "return a (Shareable, timeout) pair, or (None, timeout) to end the stream."
            )
        return made

    def _check(self, obj: Any, timeout: Any) -> None:
        name = type(self.producer).__name__
        if not isinstance(obj, Shareable):
            raise ConfigurationError(
                f"{name}.produce returned a {type(obj).__name__}, not a Shareable."
            )
        if not math.isfinite(seconds := as_seconds(timeout)) or seconds <= 0:
            raise ConfigurationError(
                f"{name}.produce returned timeout {timeout!r:.80}; "
                "it must be a positive, finite number of seconds."
            )

    def _exchange(self, obj: Shareable, timeout: float) -> dict[str, Shareable] | None:
        """Send one object and gather its replies; None if aborted meanwhile."""
        live = [t for t in self.targets if t not in self.ended]
        slots = ReplySlots(self.seq, self.targets)
        for target, ended in self.ended.items():
            slots.fill(target, self.seq, error_reply(ended.reply_rc, ended.why))
        env = Envelope(
            kind="data",
            tx=self.tx,
            seq=self.seq,
            origin=self.link.name,
            to=tuple(live),
            at=time.time(),
            channel=self.channel,
            topic=self.topic,
            timeout=timeout,
            secure=self.secure,
        )
        payload = (obj, self.ctx if self.seq == 0 else None)
        self.sent = self.seq + 1
        self.unsent, self.lost = {}, set()
        self.link.expect(self.tx, slots)
        try:
            future = self._send(env, payload, live, slots)
            # A mailbox message can be lost (a reader's connection killed mid-reply): send
            # it again to whoever has not answered; the receiver applies it once. So is a
            # byte stream that Redis failed (see _wait).
            resend = partial(self._resend, env, payload, slots)
            if not self._wait(slots, future, timeout, resend):
                return None
        finally:
            self.link.expect(self.tx, None)
        replies = slots.result()
        self._note_ended(replies)
        return replies

    def _send(
        self, env: Envelope, payload: Any, live: list[str], slots: ReplySlots
    ) -> StreamFuture | None:
        if not live:
            return None
        try:
            reached, future = self.link.send(env, payload, live, self.secure, self.optional)
        except BackendError as exc:
            # Redis unreachable or refusing for a moment (a restart, a dropped connection):
            # the object is sent again until the round's timeout. Failing it at once left
            # a gap at every target, which then refused every later object of the session.
            self._log("Sending object %d of stream %s failed (trying again): %s", *self._at(exc))
            self.unsent.update(dict.fromkeys(live, exc))
            return None
        except StreamError as exc:  # the byte stream cannot start: it will not later either
            self._log("Sending object %d of stream %s failed: %s", *self._at(exc))
            slots.fail_missing(ReturnCode.COMMUNICATION_ERROR, f"Sending failed: {exc}", live)
            return None
        # A byte stream cannot be sent again to a target its node failed for.
        self._note(reached, slots, resendable=future is None)
        return future

    def _at(self, exc: Exception) -> tuple[int, str, Exception]:
        return self.seq, self.tx, exc

    def _note(self, reached: dict[str, Reach], slots: ReplySlots, resendable: bool) -> None:
        """Record who got the message; fill the slots of targets that cannot answer it.

        A target whose cluster node failed (while the others' answered) keeps its slot
        open if the message can be sent again: a resend reaches it once the node's
        replica is promoted, within the wait. It fails when the wait ends. A target
        that Redis failed for earlier in the round and that now has no mailbox is
        still waited for: a node back from a failure (or a promoted replica) may lack
        the mailbox until its engine makes it again, within a second.
        """
        self.reached.update(t for t, ok in reached.items() if ok is True)  # an error is truthy
        self.lost -= {t for t, ok in reached.items() if ok is True}
        returning = {t for t, ok in reached.items() if ok is False and t in self.unsent}
        returning |= self._lost_mailboxes(reached, returning)
        for target, ok in reached.items():
            if isinstance(ok, BackendError):
                self.unsent[target] = ok
            elif target not in returning:
                self.unsent.pop(target, None)
        self._fail_absent({t: ok for t, ok in reached.items() if t not in returning}, slots)
        if not resendable:
            self._fail_unsent(slots, keep=self.lost)

    def _lost_mailboxes(self, reached: dict[str, Reach], returning: set[str]) -> set[str]:
        """Targets reached earlier whose mailbox is gone without their engine's closed mark.

        Redis lost it (a restart without persistence): their engine makes it again
        within a second, so the message is sent again until the round's timeout. Failed
        at once, the object left a gap that refused every later object of the session.
        """
        gone = [
            t
            for t, ok in reached.items()
            if ok is False and t in self.reached and t not in returning
        ]
        if not gone:
            return set()
        try:
            closed = self.link.closed(gone)
        except BackendError:
            return set()  # cannot tell: as before, an engine that shut down
        lost = {t for t, shut in zip(gone, closed, strict=True) if not shut}
        self.lost |= lost
        for target in lost:
            self._log("The mailbox of %s is gone (Redis lost it?): sending again.", target)
            self.unsent[target] = BackendUnavailable(
                f"The mailbox of {target!r} was gone (Redis lost it) until the round ended."
            )
        return lost

    def _fail_unsent(self, slots: ReplySlots, keep: set[str] | None = None) -> None:
        """Fill the empty slots of targets the message did not reach: their node failed."""
        for target, exc in self.unsent.items():
            if keep and target in keep:
                continue
            reply = error_reply(ReturnCode.COMMUNICATION_ERROR, f"Sending failed: {exc}")
            if slots.fill(target, slots.seq, reply):
                self._log("Message %d of stream %s missed %s: %s", slots.seq, self.tx, target, exc)

    def _fail_absent(self, reached: dict[str, Reach], slots: ReplySlots) -> None:
        """Fill the slots of targets without a mailbox: no engine listens, none will answer."""
        absent = [t for t, ok in reached.items() if ok is False]
        if absent:
            self._log("Targets %s of stream %s have no engine listening.", absent, self.tx)
            why = "No object-protocol engine listens under this cell name (no mailbox)."
            slots.fail_missing(ReturnCode.COMMUNICATION_ERROR, why, absent)

    def _wait(
        self,
        slots: ReplySlots,
        future: StreamFuture | None,
        timeout: float,
        resend: Callable[..., None] | None,
        what: str | None = None,
    ) -> bool:
        deadline = time.monotonic() + timeout
        next_resend = time.monotonic() + self.link.resend_after
        next_look = time.monotonic() + _LEASE_LOOK
        while not slots.complete():
            if self._aborted():
                return False
            if future is not None and future.done() and future.exception() is not None:
                failure = future.exception()
                why = f"The byte stream carrying the object failed: {failure}"
                # Replies posted before it failed (by targets it reached) count.
                self.link.collect(self.tx, _ABORT_POLL)
                if failure is None or resend is None or not _redis_failed(failure):
                    slots.fail_missing(ReturnCode.COMMUNICATION_ERROR, why)
                    break
                # Redis failed it (unreachable, or it lost the chunks): send it again until
                # the round's timeout, as a mailbox message is.
                self._log("%s; sending it again.", why)
                self.unsent.update(dict.fromkeys(slots.missing(), failure))
                future, next_resend = None, time.monotonic()
            now = time.monotonic()
            if now >= deadline:
                break
            if resend is not None and (future is None or self.lost) and now >= next_resend:
                # Beside a byte stream to the others: to the lost mailboxes only.
                resend(only_lost=future is not None)
                next_resend = now + self.link.resend_after
            if now >= next_look:
                self._fail_gone(slots, future)
                next_look = now + _LEASE_LOOK
            self.link.collect(self.tx, min(deadline - now, _ABORT_POLL))
        self._fail_unsent(slots)  # their node failed: not a silence
        if not slots.complete():
            late = slots.missing()
            self._log(
                "Targets %s sent no reply to %s of stream %s within %s s.",
                late,
                what or f"object {self.seq}",
                self.tx,
                timeout,
            )
            slots.fail_missing(ReturnCode.TIMEOUT, f"No reply within {timeout} s.")
            if future is not None and not future.done():
                future.cancel()  # its keys go now rather than at their TTL
        return True

    def _fail_gone(self, slots: ReplySlots, future: StreamFuture | None) -> None:
        """Fail the targets whose cell stopped renewing its lease; they take no more objects.

        A killed (or frozen) engine leaves its mailbox until its TTL, so objects still
        reach it, and its replies would be waited for until the round's timeout. Its
        cell's lease lapses :data:`LEASE_S` after its last refresh. A Redis restart
        without persistence loses a live cell's lease only until its next refresh (a
        third of that), so a lease missing for :data:`LEASE_S` more means nobody answers.
        A byte stream carrying the object to several targets goes on without them.
        """
        waiting = [t for t in slots.missing() if t in self.reached and t not in self.unsent]
        if not waiting:
            return
        try:
            alive = self.link.alive(waiting)
        except BackendError:
            return  # cannot tell: the round's timeout decides
        now = time.monotonic()
        for target, ok in zip(waiting, alive, strict=True):
            if ok:
                self.leaseless.pop(target, None)
                continue
            since = self.leaseless.setdefault(target, now)
            if now - since < LEASE_S:
                continue
            why = (
                f"The engine of {target!r} is gone (killed, or frozen): its cell has not "
                f"renewed its lease for over {now - since + LEASE_S:.0f} s."
            )
            self._log("Stream %s: %s", self.tx, why)
            slots.fail_missing(ReturnCode.COMMUNICATION_ERROR, why, [target])
            rc = ReturnCode.COMMUNICATION_ERROR
            self.ended[target] = Ended(rc, why, reply_rc=rc)
            if future is not None and not future.done():
                self.link.give_up(future, target, why)

    def _resend(
        self, env: Envelope, payload: Any, slots: ReplySlots, only_lost: bool = False
    ) -> None:
        missing = [t for t in slots.missing() if t in self.lost or not only_lost]
        if not missing:
            return
        logger.info("Sending object %d of stream %s again to %s.", env.seq, env.tx, missing)
        try:
            reached, _ = self.link.send(env, payload, missing, self.secure, self.optional)
        except (BackendError, StreamError) as exc:  # the next attempt, or the timeout, follows
            self._log("Sending object %d of stream %s again failed: %s", env.seq, env.tx, exc)
            return
        # A mailbox gone since the first send: its engine shut down and will never answer.
        # A target its cluster node failed for before may be reached now.
        self._note(reached, slots, resendable=True)

    def _note_ended(self, replies: dict[str, Shareable]) -> None:
        for target, reply in replies.items():
            if target not in self.ended and reply.get_header(ReservedHeaderKey.SESSION_ENDED):
                rc, error = reply.get_return_code(), reply.get_header(ReservedHeaderKey.ERROR)
                why = f"{rc}: {error}" if error else rc
                self.ended[target] = Ended(
                    rc, f"The target's session ended with its reply to object {self.seq} ({why})."
                )

    def _aborted(self) -> bool:
        signal = self.fl_ctx.get_run_abort_signal()
        return self.link.stopping() or (signal is not None and signal.triggered)

    def _close(self, rc: str) -> str:
        """Tell every target still in the session that it ended (OK) or was aborted.

        After a normal end, wait (up to the last object's timeout) until each target
        has finalized, so the consumers are done when ``stream_objects`` returns.

        Returns:
            ``rc``, unless the end was normal and a target did not finalize with OK (it
            ended its session early with an error, lost objects, failed, is gone, did
            not confirm, or never got an object: no engine listened): then the first
            such target's return code, so an unconfirmed end is never reported as OK.
        """
        if rc != ReturnCode.OK:
            self._notify("abort", rc)
            return rc
        failed = self._never_reached()
        failed.update(self._failed_early())
        failed.update(self._notify("end", rc))
        return next((failed[t] for t in self.targets if t in failed), rc)

    def _never_reached(self) -> dict[str, str]:
        """Targets that objects were sent for but that got none (no engine listened)."""
        if not self.sent:
            return {}
        never = [t for t in self.targets if t not in self.reached]
        if never:
            self._log(
                "Targets %s of stream %s got none of its %d object(s): no object-protocol "
                "engine listened under their names, or Redis failed for them.",
                never,
                self.tx,
                self.sent,
            )
        return dict.fromkeys(never, ReturnCode.COMMUNICATION_ERROR)

    def _failed_early(self) -> dict[str, str]:
        """Targets that ended their session before the end, with a code other than OK."""
        ended = self.ended.items()
        failed = {t: e.rc for t, e in ended if t in self.reached and e.rc != ReturnCode.OK}
        for target in failed:
            self._log("Target %s of stream %s: %s", target, self.tx, self.ended[target].why)
        return failed

    def _notify(self, kind: str, rc: str) -> dict[str, str]:
        """Send the end or abort notice; after an end, who did not finalize with OK."""
        notify = [t for t in self.targets if t in self.reached and t not in self.ended]
        if not notify:
            return {}
        env = Envelope(
            kind=kind,
            tx=self.tx,
            # The number of objects sent (never one of their numbers): a receiver that
            # applied fewer knows that it lost objects and does not finalize with OK.
            seq=self.sent,
            origin=self.link.name,
            to=tuple(notify),
            at=time.time(),
            channel=self.channel,
            topic=self.topic,
            rc=rc,
        )
        slots = ReplySlots(env.seq, notify)
        self.unsent, self.lost = {}, set()
        self.link.expect(self.tx, slots)
        try:
            reached, _ = self.link.send(env, None, notify, False, self.optional)
            self._note(reached, slots, resendable=True)  # no wait for those whose engine is gone
            if kind == "end":
                resend = partial(self._resend, env, None, slots)
                self._wait(slots, None, self.timeout, resend, "the end notice")
                return self._failed_end(slots)
        except FrameworkError as exc:  # the receivers' idle expiry finalizes them instead
            self._log("Could not send %s of stream %s to %s: %s", kind, self.tx, notify, exc)
            return dict.fromkeys(notify, ReturnCode.COMMUNICATION_ERROR) if kind == "end" else {}
        finally:
            self.link.expect(self.tx, None)
        return {}

    def _failed_end(self, slots: ReplySlots) -> dict[str, str]:
        """Log each target that did not finalize with OK; their return codes."""
        failed: dict[str, str] = {}
        for target, reply in slots.result().items():
            rc = reply.get_return_code()
            if rc != ReturnCode.OK:
                why = reply.get_header(ReservedHeaderKey.ERROR)
                self._log(
                    "Target %s did not finalize stream %s with OK: %s: %s", target, self.tx, rc, why
                )
                failed[target] = rc
        return failed

    def _log(self, msg: str, *args: Any) -> None:
        logger.log(logging.DEBUG if self.optional else logging.WARNING, msg, *args)


def _redis_failed(exc: BaseException | None) -> bool:
    """Whether Redis, not a party to the transfer, made a byte stream fail."""
    while exc is not None:
        if isinstance(exc, BackendError | StreamDataLost):
            return True
        exc = exc.__cause__
    return False

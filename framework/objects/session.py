"""Session bookkeeping of the object protocol: sequence checks and reply slots.

:class:`SeqTracker` is a receiver's view of one session's sequence numbers: the next
expected number is applied, a repeat of the last applied one is a retry (answered with
the reply already given, never applied twice), a number beyond the next is a gap
(reported, not applied), and anything older is stale. :class:`ReplySlots` is a sender's
view of one object: one slot per target, filled by the first matching reply, the rest
filled with an error reply when the wait ends. This module does no I/O.
"""

from __future__ import annotations

import enum
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from framework.objects.shareable import ReservedHeaderKey, ReturnCode, Shareable, error_reply

__all__ = ["ReplySlots", "SeqTracker", "Tombstones", "Verdict"]


class Verdict(enum.Enum):
    """What a receiver does with an object's sequence number."""

    APPLY = "apply"
    RETRY = "retry"
    GAP = "gap"
    STALE = "stale"


@dataclass
class SeqTracker:
    """Next expected sequence number and the reply to the last applied object."""

    expected: int = 0
    last_reply: Shareable | None = None

    def verdict(self, seq: int) -> Verdict:
        """Classify ``seq`` against what this session has applied."""
        if seq == self.expected:
            return Verdict.APPLY
        if seq == self.expected - 1 and self.last_reply is not None:
            return Verdict.RETRY
        return Verdict.GAP if seq > self.expected else Verdict.STALE

    def applied(self, reply: Shareable) -> None:
        """Record that the expected object was applied and answered with ``reply``."""
        self.expected += 1
        self.last_reply = reply

    def gap_reply(self, seq: int) -> Shareable:
        """The reply to an object that arrived before ``expected`` did."""
        return error_reply(
            ReturnCode.BAD_REQUEST_DATA,
            f"Sequence gap: expected object {self.expected}, got {seq}; "
            f"objects {self.expected}..{seq - 1} never arrived, so {seq} was not applied.",
        )

    def stale_reply(self, seq: int) -> Shareable:
        """The reply to a late copy of an object applied earlier."""
        return error_reply(
            ReturnCode.BAD_REQUEST_DATA,
            f"Object {seq} is a late duplicate (next expected {self.expected}); not applied again.",
        )


class ReplySlots:
    """The replies of one object, one slot per target.

    The sending thread reads replies into the slots itself; a reply that came as a byte
    stream is filed from the cell's thread, hence the lock.

    Args:
        seq: The object's sequence number; replies to other numbers are ignored.
        targets: Every target the object went to (no duplicates).
    """

    __slots__ = ("_lock", "_wanted", "replies", "seq", "targets")

    def __init__(self, seq: int, targets: list[str]) -> None:
        self.seq = seq
        self.targets = targets
        self.replies: dict[str, Shareable] = {}
        self._wanted = frozenset(targets)
        self._lock = threading.Lock()

    def fill(self, target: str, seq: int, reply: Shareable) -> bool:
        """Put ``reply`` in ``target``'s slot; False if unexpected or already filled."""
        with self._lock:
            if seq != self.seq or target not in self._wanted or target in self.replies:
                return False
            self.replies[target] = reply
            return True

    def missing(self) -> list[str]:
        """Targets without a reply yet."""
        with self._lock:
            return [t for t in self.targets if t not in self.replies]

    def complete(self) -> bool:
        """Whether every target has a reply."""
        return len(self.replies) == len(self._wanted)  # slots only ever fill

    def fail_missing(self, rc: str, reason: str, only: list[str] | None = None) -> None:
        """Fill the empty slots (of ``only``, if given) with an error reply."""
        for target in only if only is not None else self.missing():
            self.fill(target, self.seq, error_reply(rc, reason))

    def result(self) -> dict[str, Shareable]:
        """The replies in target order (call once every slot is filled)."""
        with self._lock:
            return {t: self.replies[t] for t in self.targets if t in self.replies}


class Tombstones:
    """Recently ended sessions and their last reply, so a late retry gets the same answer.

    Forgetting a session must not let a copy of its first object start it again. For
    each sender, the latest start time (the sender's clock) among its forgotten sessions
    is kept, and :meth:`forgotten` refuses a session start at or before it; starts sent
    before ``floor`` (when this receiver started) are refused too.

    Args:
        limit: Sessions remembered, and senders whose forgotten starts are remembered;
            the oldest are forgotten first (a forgotten sender's time raises ``floor``).
        floor: Session starts sent before this time cannot be new to this receiver.
    """

    def __init__(self, limit: int = 4096, floor: float = 0.0) -> None:
        self._ended: OrderedDict[tuple[str, str], tuple[int, Shareable | None, str, float]] = (
            OrderedDict()
        )
        self._horizon: OrderedDict[str, float] = OrderedDict()
        self._limit = limit
        self._floor = floor

    def add(
        self,
        key: tuple[str, str],
        last_seq: int,
        reply: Shareable | None,
        rc: str,
        started: float,
    ) -> None:
        """Remember that session ``key`` (started at ``started``) ended with ``rc``.

        Args:
            key: ``(origin, session id)``.
            last_seq: The last object applied.
            reply: The reply to it (answered again to a retry).
            rc: The session's return code.
            started: When the session's first object was sent (the sender's clock).
        """
        self._ended[key] = (last_seq, reply, rc, started)
        self._ended.move_to_end(key)
        while len(self._ended) > self._limit:
            (origin, _), (*_, first) = self._ended.popitem(last=False)
            self._horizon[origin] = max(self._horizon.pop(origin, first), first)
        while len(self._horizon) > self._limit:
            self._floor = max(self._floor, self._horizon.popitem(last=False)[1])

    def forgotten(self, origin: str, started: float) -> bool:
        """Whether a session of ``origin`` starting at ``started`` may have been forgotten."""
        return started < self._floor or started <= self._horizon.get(origin, -1.0)

    def answer(self, key: tuple[str, str], seq: int) -> Shareable | None:
        """The reply for an object of an ended session, or None if the session is unknown."""
        found = self._ended.get(key)
        if found is None:
            return None
        last_seq, reply, rc, _ = found
        if seq == last_seq and reply is not None:
            return reply
        return error_reply(
            ReturnCode.EARLY_TERMINATION,
            f"The session ended with {rc} after object {last_seq}; object {seq} was not applied.",
            **{ReservedHeaderKey.SESSION_ENDED: True},
        )

    def rc_of(self, key: tuple[str, str]) -> str | None:
        """The return code session ``key`` ended with, or None if it is unknown."""
        found = self._ended.get(key)
        return None if found is None else found[2]

    def __contains__(self, key: Any) -> bool:
        return key in self._ended

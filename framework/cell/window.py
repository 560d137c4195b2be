"""Flow-control accounting for one transfer: a window of unacknowledged bytes per receiver.

The sender may write while the slowest receiver lags by less than ``limit`` bytes, so
Redis holds at most about one window of chunk frames per transfer. Frames that every
receiver has consumed can be trimmed. This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from framework.exceptions import StreamError

__all__ = ["Position", "Window"]


@dataclass(frozen=True, order=True)
class Position:
    """How far a receiver got: its last consumed chunk ``seq`` and byte offset ``off``.

    ``seq == -1`` means nothing consumed yet.
    """

    seq: int = -1
    off: int = 0


class Window:
    """Tracks sent and acknowledged positions of every receiver of one transfer.

    Args:
        targets: Receiver names.
        limit: Most bytes the slowest receiver may lag behind the sender.
        start: Position already sent (non-zero when a sender resumes); receivers start
            at "nothing consumed" and catch up through their acknowledgements.

    Raises:
        StreamError: If there is no target or the limit is not positive.
    """

    def __init__(self, targets: Iterable[str], limit: int, start: Position | None = None) -> None:
        self._acked: dict[str, Position] = dict.fromkeys(targets, Position())
        if not self._acked or limit <= 0:
            raise StreamError(
                f"A window needs targets and a positive limit, got {list(self._acked)} and {limit}."
            )
        self.limit = limit
        self.sent = start or Position()
        self._done: set[str] = set()
        self._trimmed_seq = -1

    @property
    def targets(self) -> list[str]:
        """The receivers, in the order given."""
        return list(self._acked)

    def on_sent(self, seq: int, end: int) -> None:
        """Record that chunk ``seq`` ending at byte ``end`` is in Redis."""
        self.sent = Position(seq, end)

    def on_ack(self, target: str, position: Position, done: bool = False) -> bool:
        """Record an acknowledgement.

        Args:
            target: The receiver that acknowledged.
            position: Its consumed position.
            done: True on the receiver's final acknowledgement.

        Returns:
            True if the receiver moved forward (acks from unknown targets and stale
            acks are ignored).
        """
        previous = self._acked.get(target)
        if previous is None:
            return False
        if done:
            self._done.add(target)
        if position <= previous:
            return done
        self._acked[target] = position
        return True

    def acked(self, target: str) -> Position:
        """The last position ``target`` acknowledged."""
        return self._acked[target]

    def done(self, target: str) -> bool:
        """Whether ``target`` sent its final acknowledgement."""
        return target in self._done

    def drop(self, target: str) -> None:
        """Go on without ``target``: it no longer holds the window back (a receiver gone).

        Raises:
            StreamError: If ``target`` is the last receiver (the transfer has nobody left).
        """
        if target in self._acked and len(self._acked) == 1:
            raise StreamError(f"Cannot go on without {target!r}: it is the last receiver.")
        self._acked.pop(target, None)
        self._done.discard(target)

    def slowest(self) -> Position:
        """The lowest acknowledged position over all receivers."""
        return min(self._acked.values())

    def in_flight(self) -> int:
        """Bytes sent but not yet consumed by the slowest receiver."""
        return self.sent.off - self.slowest().off

    def can_send(self) -> bool:
        """True while the slowest receiver lags by less than the limit."""
        return self.in_flight() < self.limit

    def room(self) -> int:
        """Bytes that may still be sent before the window is full (may be <= 0)."""
        return self.limit - self.in_flight()

    def all_done(self) -> bool:
        """True once every receiver sent its final acknowledgement."""
        return len(self._done) == len(self._acked)

    def trim_point(self) -> int | None:
        """The chunk seq below which frames may now be deleted, if it advanced.

        Returns:
            ``seq`` such that every chunk numbered below it was consumed by every
            receiver, or None when nothing new can be trimmed.
        """
        floor = self.slowest().seq
        if floor <= self._trimmed_seq:
            return None
        self._trimmed_seq = floor
        return floor + 1

"""Bookkeeping of a list subscriber's pops, so that a pop whose reply is lost loses nothing.

A bare ``BLPOP`` removes the message from Redis before the reply leaves the server: if
the connection drops meanwhile, the message is gone. Instead, each pop *moves* the head
of the topic's list to the tail of a list of the subscriber's own, its *taken* key
(``BLMOVE``). Every message in that key but the newest has been handed over, so a pop
is usually that one command in one round trip, as with ``BLPOP``. Now and then the same
round trip trims the key to its newest message (``LTRIM``) and renews its TTL; the key
is never emptied, so Redis never deletes it and it keeps that TTL.

A pop whose reply never arrived leaves the key *unsure*: the subscriber knows how long
the key was, so its length tells whether the pop took a message (then the key's last
one) also when the pop's round trip trimmed it. The subscriber moves on to a new taken
key (a new *generation*), as the lost pop may still be blocked on the server and take
a message later: the unsure key is read again until a read finds no new message after
``settle`` seconds, then deleted.

This module does no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Pop", "Taking", "Unsure"]

#: Pops between trims of the taken key. At least 3, so that the lengths a lost pop may
#: leave with and without its trim (see :meth:`Taking.checked`) never coincide.
TRIM_EVERY = 32


@dataclass(frozen=True)
class Pop:
    """What one pop's round trip does besides moving a message into key ``gen``."""

    gen: int
    #: ``LTRIM <key> -1 -1`` first: keep only the newest message.
    trim: bool
    #: ``EXPIRE <key>`` after the move: the key may be new, or its TTL due for renewal.
    expire: bool
    #: Keys of earlier generations to delete first: all their messages were handed over.
    drop: tuple[int, ...]


@dataclass
class Unsure:
    """A taken key whose pop's reply was lost."""

    #: Its length before the lost pop, and after that pop's trim (if it had one).
    lengths: tuple[int, ...]
    #: When a read that finds no new message is final.
    settled_at: float


@dataclass
class Taking:
    """Which taken key a list subscriber pops into, trims, deletes or reads back.

    Args:
        settle: Seconds after a lost pop during which the server may still fill its key.
        ttl: Seconds a taken key lives; renewed when half of it has passed.
    """

    settle: float
    ttl: float
    #: Generation of the current taken key.
    gen: int = 0
    #: Messages in the current key, all handed over.
    length: int = 0
    #: When the current key's TTL is due for renewal (0: it has none yet).
    renew_at: float = 0.0
    #: Keys of lost pops, by generation.
    unsure: dict[int, Unsure] = field(default_factory=dict)
    #: Old generations whose messages were all handed over: deleted with the next pop.
    drop: list[int] = field(default_factory=list)

    def plan(self, now: float) -> Pop:
        """The next pop."""
        return Pop(
            gen=self.gen,
            trim=self.length >= TRIM_EVERY,
            expire=self.length == 0 or now >= self.renew_at,
            drop=tuple(self.drop),
        )

    def popped(self, pop: Pop, took: bool, now: float) -> None:
        """The round trip of ``pop`` succeeded; it took a message (handed over) or not."""
        self.drop = [g for g in self.drop if g not in pop.drop]
        if pop.trim:
            self.length = 1
        if pop.expire and (took or self.length):  # EXPIRE on a missing key does nothing
            self.renew_at = now + self.ttl / 2
        self.length += took

    def lost(self, pop: Pop, now: float) -> None:
        """The reply to ``pop`` never arrived: read its key back, and pop into a new one."""
        lengths = (self.length, 1) if pop.trim else (self.length,)
        self.unsure[pop.gen] = Unsure(lengths, now + self.settle)
        self.gen, self.length, self.renew_at = pop.gen + 1, 0, 0.0

    def checked(self, gen: int, length: int, now: float) -> bool:
        """Unsure key ``gen`` has ``length`` messages now: is its last one new?

        A new message is handed over, after which :meth:`hand_over` deletes the key.

        Raises:
            ValueError: If that length is none a lost pop can leave, so something else
                changed the key: its messages cannot be told apart.
        """
        unsure = self.unsure[gen]
        if length - 1 in unsure.lengths:
            del self.unsure[gen]
            return True
        if length not in unsure.lengths and length != 0:  # 0: expired, which took long
            raise ValueError(f"holds {length} messages, where {unsure.lengths} were expected")
        if now >= unsure.settled_at:
            del self.unsure[gen]
            self.drop.append(gen)
        return False

    def hand_over(self, gen: int) -> None:
        """The new message read back from unsure key ``gen`` was handed over."""
        self.drop.append(gen)

    def forget(self, gen: int) -> None:
        """Unsure key ``gen`` was changed by something else: stop reading it."""
        self.unsure.pop(gen, None)
        self.drop.append(gen)

"""A list subscriber's pops through a taken key of its own (see :mod:`._taking`)."""

from __future__ import annotations

import math
import secrets
import time
from collections import deque
from typing import Any, Final

from framework._raw import round_trip
from framework.connection import RedisConnection
from framework.exceptions import BackendError, MessageLossError
from framework.pubsub._taking import Pop, Taking

__all__ = ["Taker"]

#: Seconds a taken key lives: a message a subscriber could neither hand over nor put
#: back (Redis unreachable when it closed) can be found there by hand meanwhile.
TAKEN_TTL_S: Final = 86400


class Taker:
    """Moves messages from a topic's list into keys of one subscriber's own, and back.

    Not thread-safe: its subscriber serialises the calls.

    Args:
        connection: The subscriber's connection.
        topic: The topic.
        settle: Seconds after a lost pop during which the server may still fill its key.
    """

    def __init__(self, connection: RedisConnection, topic: str, settle: float) -> None:
        self._conn = connection
        self._topic = topic
        self._queue = connection.keys.queue(topic)
        self.owner = secrets.token_hex(8)
        self._taking = Taking(settle=settle, ttl=TAKEN_TTL_S)
        self._ready: deque[tuple[int, bytes]] = deque()  # read back, not handed over yet
        self._current = (0, self._conn.keys.queue_taken(topic, self.owner, 0))

    def key(self, gen: int) -> str:
        """Taken key of generation ``gen``."""
        if gen != self._current[0]:  # a pop costs no key building, but after a lost one
            self._current = (gen, self._conn.keys.queue_taken(self._topic, self.owner, gen))
        return self._current[1]

    def holding(self) -> bool:
        """Whether a message taken from the list may still be here to hand over."""
        return bool(self._ready or self._taking.unsure)

    def take(self, wait: float | None, reply_within: float | None = None) -> bytes | None:
        """Hand over the next message: one read back after a lost reply, or the list's head.

        Args:
            wait: Seconds to block for a message (at least a millisecond); None: do not.
            reply_within: Longest wait (s) for the pop's reply (a caller's deadline), not
                the socket timeout; a pop left unanswered is read back like a lost one.

        Raises:
            BackendError: If Redis failed (a message the failed call took is handed over
                by a later call).
            MessageLossError: If something else changed a taken key whose pop's reply
                was lost, so the message that pop took may be lost.
        """
        if self._taking.unsure and not self._ready:
            self._read_back(time.monotonic(), reply_within)
        if self._ready:
            gen, message = self._ready.popleft()
            self._taking.hand_over(gen)
            return message
        return self._move(wait, reply_within)

    def _move(self, wait: float | None, reply_within: float | None = None) -> bytes | None:
        pop = self._taking.plan(time.monotonic())
        try:
            with self._conn.mapped_errors(f"pop from topic {self._topic!r}"):
                message = self._send(pop, wait, reply_within)
        except BackendError:
            self._taking.lost(pop, time.monotonic())
            raise
        self._taking.popped(pop, message is not None, time.monotonic())
        return None if message is None else bytes(message)

    def _send(self, pop: Pop, wait: float | None, reply_within: float | None = None) -> Any:
        """One round trip: usually the move alone, else with the taken keys' upkeep.

        See :func:`_run` for ``reply_within``.
        """
        client = self._conn.once if wait is None else self._conn.blocking
        key = self.key(pop.gen)
        # One key per DEL: a cluster pipeline takes no multi-key DEL.
        commands: list[tuple[Any, ...]] = [("DEL", self.key(gen)) for gen in pop.drop]
        if pop.trim:
            commands.append(("LTRIM", key, -1, -1))  # the newest message stays, and its TTL
        if wait is None:
            commands.append(("LMOVE", self._queue, key, "LEFT", "RIGHT"))
        else:  # BLMOVE's timeout 0 means forever: wait at least a millisecond instead
            commands.append(("BLMOVE", self._queue, key, "LEFT", "RIGHT", max(wait, 0.001)))
        if pop.expire:
            commands.append(("EXPIRE", key, TAKEN_TTL_S))
        return _run(client, commands, reply_within)[-2 if pop.expire else -1]

    def _read_back(self, now: float, reply_within: float | None = None) -> None:
        """Read the keys of lost pops; queue the messages they took."""
        gens = sorted(self._taking.unsure)
        commands: list[tuple[Any, ...]] = []
        for gen in gens:
            commands += [("LLEN", self.key(gen)), ("LINDEX", self.key(gen), -1)]
        # Also after a plain outage: a pop that got no reply may or may not have run.
        what = f"pop from topic {self._topic!r} (checking what an unanswered pop may have taken)"
        with self._conn.mapped_errors(what):
            replies = _run(self._conn.once, commands, reply_within)
        for gen, length, last in zip(gens, replies[::2], replies[1::2], strict=True):
            try:
                if self._taking.checked(gen, int(length), now):
                    self._ready.append((gen, bytes(last)))
            except ValueError as exc:
                self._taking.forget(gen)
                raise MessageLossError(
                    f"Taken key {self.key(gen)!r} of topic {self._topic!r} {exc}: something "
                    "else changed it, so the message a pop whose reply was lost took may be "
                    "lost.",
                    topic=self._topic,
                    possible=True,
                ) from None

    def put_back(self, messages: list[bytes]) -> None:
        """Push ``messages`` onto the list's head, the first of them at the very head.

        Raises:
            BackendError: If Redis failed (nothing was pushed: one command).
        """
        if not messages:
            return
        with self._conn.mapped_errors(f"put back messages of topic {self._topic!r}"):
            self._conn.once.lpush(self._queue, *reversed(messages))

    def unread(self) -> list[str]:
        """Keys that hold, or may hold, a message not handed over."""
        gens = {gen for gen, _ in self._ready} | set(self._taking.unsure)
        return [self.key(gen) for gen in sorted(gens)]

    def close(self) -> None:
        """Put back at the list's head what was taken but not handed over; delete the keys.

        Raises:
            BackendError: If Redis failed; what is left stays in its key for its TTL.
            MessageLossError: See :meth:`take`.
        """
        if self._taking.unsure:
            self._read_back(math.inf)  # no later pop will look again
        gens = {self._taking.gen, *self._taking.drop}
        pipe = self._conn.once.pipeline(transaction=False)
        for gen, _ in reversed(self._ready):  # the newest first: each goes to the head
            pipe.lmove(self.key(gen), self._queue, "RIGHT", "LEFT")
            gens.add(gen)
        for gen in sorted(gens):  # one key per DEL: a cluster pipeline takes no multi-key DEL
            pipe.delete(self.key(gen))
        with self._conn.mapped_errors(f"put back messages of topic {self._topic!r}"):
            pipe.execute()
        self._ready.clear()
        self._taking.drop.clear()


def _run(client: Any, commands: list[tuple[Any, ...]], reply_within: float | None) -> list[Any]:
    """Run ``commands`` in one round trip; their replies.

    With ``reply_within`` and a plain client, they go raw, each reply awaited at most
    that long (redis-py's pipeline cannot bound the wait); else through redis-py.
    """
    if reply_within is not None:
        replies = round_trip(client, commands, timeout=reply_within)
        if replies is not None:
            return replies
    if len(commands) == 1:  # the usual pop: no pipeline's cost
        return [client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return list(pipe.execute())

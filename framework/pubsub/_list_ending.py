"""When a list topic has ended for one of its competing subscribers (see :mod:`.lists`).

Each message of a list topic goes to one subscriber, so only one of them gets a
producer's end-of-stream event. The others learn the end from the topic's producers
hash: once every producer recorded there has ended (or was found gone) and the list
is empty, nothing more is coming. A producer's last push and its ``end`` state are
written in one transaction, and the hash is read before the list's length, so a
subscriber never sees the end before the last message is in the list.

A run that had finished before the subscriber came (every producer ended or gone, the
list empty) is not the subscriber's run: it waits for the next one instead of ending
at once. A producer's first message forgets such a run (:data:`REGISTER`).

Without the permission to read the hash (an ACL that allows list commands only), a
subscriber cannot tell: it says so once and leaves the end to its consumer's own view.
Given a secret, it acts only on records signed with it (see :mod:`._records`).
"""

from __future__ import annotations

import logging
from typing import Final

from framework.connection import RedisConnection
from framework.exceptions import BackendError, MessageLossError, PermissionDenied
from framework.pubsub._records import LIST
from framework.pubsub._stream_liveness import Liveness
from framework.pubsub._watched import finished_run_lua

__all__ = ["ENDS_TTL_MS", "REGISTER", "ListEnding"]

logger = logging.getLogger("framework.pubsub.lists")

#: Lifetime (ms) of a list topic's producers hash, renewed with a producer's records.
ENDS_TTL_MS: Final = 7 * 24 * 3600 * 1000

# KEYS[1]: producers hash; ARGV: producer, its state, TTL (ms), prefix of alive keys.
# A finished run (every producer ended, or stopped beating: its alive key is gone) is
# forgotten before a new producer registers, so subscribers wait for the new run's
# producers, not the old run's (nor report a producer killed in it again).
REGISTER: Final = (
    finished_run_lua("KEYS[1]")
    + """
if finished then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return finished and 1 or 0
"""
)


class ListEnding:
    """Tells one subscriber of a list topic that the topic ended, or that a producer is gone.

    Args:
        connection: The subscriber's connection.
        topic: The topic.
    """

    def __init__(self, connection: RedisConnection, topic: str) -> None:
        self._conn = connection
        self._topic = topic
        self._liveness = Liveness(
            connection, connection.keys.queue_alive, connection.keys.queue_end, LIST
        )
        self.ended = False
        #: Whether the producers hash held anything at the last look.
        self.recorded = False
        self._took = False
        self._skipped: dict[bytes, bytes] | None = None
        self._known = False  # whether the state at the start is known
        self._blind = False  # no permission to look
        try:
            self._note_start()
        except BackendError as exc:  # Redis unreachable: its first look at the topic decides
            logger.debug("Producers of list topic %r not read yet: %s", topic, exc)

    def took(self) -> None:
        """A message was handed over to this subscriber.

        A subscriber that knows of no producer yet reads the hash now (at most once a
        second): should Redis restart before it is ever idle, it knows whom to wait for.
        """
        self._took = True
        if self._blind or not self._liveness.needs_look(self._topic):
            return
        try:
            self._read()
        except BackendError as exc:  # the message is the caller's: a later look decides
            logger.debug("Producers of list topic %r not read: %s", self._topic, exc)

    def verify_with(self, secret: bytes) -> None:
        """Act only on producer records signed with ``secret`` from now on (see :mod:`._records`).

        A finished run set aside at the start, read before, needs no second look: a
        forged record in it never verifies, so the topic never ends on it.
        """
        self._liveness.records.verify_with(secret)

    def restarted(self) -> None:
        """Redis restarted without persistence: the producers hash may be missing some."""
        self._liveness.restarted()

    @property
    def trusted(self) -> bool:
        """Whether what the producers hash says can be trusted (no recent restart seen)."""
        return self._liveness.trusted

    def check(self, *, now: bool = False) -> list[MessageLossError]:
        """Look again, at most once a second: the producers found gone since the last look.

        Sets :attr:`ended` once every recorded producer has ended or is gone and the
        list is empty.

        Args:
            now: Look now, whenever the last look was (the caller saw an end).

        Raises:
            BackendError: If Redis failed.
        """
        if self.ended or self._blind or not (self._liveness.due() or now):
            return []
        try:
            if not self._known:
                self._note_start()
            return self._look()
        except PermissionDenied as exc:
            logger.warning(
                "Cannot tell when list topic %r ends for competing subscribers (%s); "
                "each consumer ends at the ends it gets itself.",
                self._topic,
                exc,
            )
            self._blind, self.recorded = True, False
            return []

    def _look(self) -> list[MessageLossError]:
        producers, waiting = self._read()
        self.recorded = bool(producers)
        losses = self._liveness.check(self._topic, producers)
        gone = self._liveness.gone
        finished = producers and all(
            state.startswith(b"end:") or gone(self._topic, producer, state)
            for producer, state in producers.items()
        )
        trusted = self._liveness.trusts(self._topic, producers)
        if finished and not waiting and producers != self._skipped and trusted:
            logger.debug("List topic %r ended: every producer ended", self._topic)
            self.ended = True
        return losses

    def _note_start(self) -> None:
        producers, waiting = self._read()
        if producers and not waiting and not self._took:
            # A run that finished before this subscriber came (or, if it could not look
            # then, before it took anything): not its run, and not its losses.
            stopped = self._liveness.finished_run(self._topic, producers)
            if stopped is not None:
                self._liveness.mark_gone(self._topic, stopped)
                self._skipped = producers
        self._known = True

    def _read(self) -> tuple[dict[bytes, bytes], int]:
        """The producers hash, then the list's length (see the module docstring)."""
        keys = self._conn.keys
        pipe = self._conn.once.pipeline(transaction=False)
        pipe.hgetall(keys.queue_end(self._topic))
        pipe.llen(keys.queue(self._topic))
        with self._conn.mapped_errors(
            f"check whether list topic {self._topic!r} ended", command="HGETALL"
        ):
            producers, waiting = pipe.execute()
        read = self._liveness.records.read(self._topic, producers)
        self._liveness.seen(self._topic, read)
        return read, int(waiting)

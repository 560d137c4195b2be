"""Which producers of a topic stopped without ending it (durable and list topics).

A producer that sends heartbeats is recorded in the topic's producers hash as
``open:<run>:live`` and keeps an alive key (see :mod:`._stream_publisher` and
:mod:`.lists`). An idle subscriber looks, now and then, for such producers whose key
has expired: each is reported once per run as gone, a possible loss of whatever it had
not published, and counts as ended from then on.

A restart without persistence loses the producers hash, and a publisher whose client
reconnects silently does not notice. Its producers record themselves again with their
heartbeats and, while they publish, every second. A subscriber that saw the restart
trusts the end a topic's hash shows once every producer it had last seen open there is
recorded again; one that had not read the hash before, or misses a producer (killed
meanwhile), waits until they have had the time to (:data:`RESTART_GRACE_S`; see
:meth:`Liveness.restarted`).

The hash is read through :attr:`Liveness.records`: given a secret, only signed records
count (see :mod:`._records`), and every state this module sees is without its MAC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, MessageLossError
from framework.pubsub._records import DURABLE, RecordCheck
from framework.pubsub._watched import LIVE_SUFFIX

__all__ = ["RESTART_GRACE_S", "Liveness"]

#: Seconds between two looks of an idle subscriber at its topics' producers.
CHECK_EVERY_S: Final = 1.0
#: Seconds after a restart that lost a producers hash during which no end read from it is
#: trusted: producers that live on record themselves again within a second of publishing,
#: or with their next heartbeat (three heartbeats at the default interval).
RESTART_GRACE_S = 30.0


class Liveness:
    """Finds the watched producers of topics whose alive key has expired.

    Args:
        connection: The subscriber's connection.
        alive_key: ``(topic, producer)`` -> the producer's alive key; durable topics'
            by default.
        producers_key: ``topic`` -> its producers hash; durable topics' by default.
        kind: What the topics are, for messages and signed records (:data:`DURABLE`,
            :data:`~._records.LIST`).

    Attributes:
        records: Reads (and, given a secret, verifies) the records of a producers hash.
    """

    def __init__(
        self,
        connection: RedisConnection,
        alive_key: Callable[[str, str], str] | None = None,
        producers_key: Callable[[str], str] | None = None,
        kind: str = DURABLE,
    ) -> None:
        self._conn = connection
        self._alive_key = alive_key or connection.keys.events_alive
        self._producers_key = producers_key or connection.keys.events_end
        self._kind = kind
        self.records = RecordCheck(kind)
        self._gone: set[tuple[str, bytes, bytes]] = set()  # (topic, producer, its state)
        self._next_at = 0.0
        self._distrust_until = 0.0
        self._last_read: dict[str, dict[bytes, bytes]] = {}  # topic -> its producers hash
        self._awaited: dict[str, set[bytes]] = {}  # topic -> open before the restart
        self._asked: dict[str, float] = {}  # topic -> when needs_look may say yes again

    def seen(self, topic: str, producers: dict[bytes, bytes]) -> None:
        """Note the producers hash of ``topic`` as just read from Redis."""
        self._last_read[topic] = producers

    def needs_look(self, topic: str) -> bool:
        """Whether a subscriber taking messages of ``topic`` should read its producers now.

        Yes, at most every :data:`CHECK_EVERY_S`, while it knows of no producer there: a
        subscriber that is never idle would otherwise never look, and after a restart it
        could not tell whom to wait for (it would wait out the whole grace).
        """
        if self._last_read.get(topic):
            return False
        now = time.monotonic()
        if now < self._asked.get(topic, 0.0):
            return False
        self._asked[topic] = now + CHECK_EVERY_S
        return True

    def restarted(self) -> None:
        """Redis restarted without persistence: the producers hashes may be missing some.

        Producers last seen open must record themselves again before a hash is trusted,
        and every hash is distrusted for :data:`RESTART_GRACE_S` whatever was seen.
        """
        # An empty hash may have been read after the restart, before it was noticed.
        awaited = {
            topic: {p for p, state in producers.items() if state.startswith(b"open:")}
            for topic, producers in self._last_read.items()
            if producers
        }
        if not self.trusted:
            # The same restart noticed again (the group gone, say): what was read since
            # came from the emptied server, so only what was awaited before still counts.
            awaited = {t: names | awaited.get(t, set()) for t, names in self._awaited.items()}
        self._awaited = awaited
        self._distrust_until = time.monotonic() + RESTART_GRACE_S
        self._last_read.clear()

    def lost_for_good(self, topic: str) -> bool:
        """Whether the empty producers hash of ``topic`` was lost by a restart for good.

        The hash held producers before the restart, and each had ended (an ended one
        never records itself again), or the grace is over and none came back. Nothing
        is left to wait for: the topic ended, and what Redis lost with it was reported.
        """
        awaited = self._awaited.get(topic)
        return awaited is not None and (not awaited or self.trusted)

    @property
    def trusted(self) -> bool:
        """Whether the ends a producers hash shows can be trusted (no recent restart seen)."""
        return time.monotonic() >= self._distrust_until

    def trusts(self, topic: str, producers: dict[bytes, bytes]) -> bool:
        """Whether the end of ``topic`` that ``producers`` (its hash, as read) shows is sure.

        After a restart: once each producer last seen open is recorded again, or the grace
        is over. A topic whose hash was not read before the restart waits out the grace.
        """
        if self.trusted:
            return True
        awaited = self._awaited.get(topic)
        return awaited is not None and awaited <= producers.keys()

    def due(self) -> bool:
        """Whether it is time to look again (at most every :data:`CHECK_EVERY_S`)."""
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + CHECK_EVERY_S
        return True

    def gone(self, topic: str, producer: bytes, state: bytes) -> bool:
        """Whether ``producer`` (in ``state``) was found gone from ``topic``."""
        return (topic, producer, state) in self._gone

    def check(self, topic: str, producers: dict[bytes, bytes]) -> list[MessageLossError]:
        """Report the watched ``producers`` of ``topic`` whose alive key expired.

        Args:
            topic: The topic.
            producers: Its producers hash (producer -> state).

        Raises:
            BackendError: If Redis failed.
        """
        expired = self.expired(topic, producers)
        self.mark_gone(topic, expired)
        return [_gone(self._kind, topic, p.decode(errors="replace")) for p, _ in expired]

    def expired(self, topic: str, producers: dict[bytes, bytes]) -> list[tuple[bytes, bytes]]:
        """The watched ``producers`` whose alive key expired, not found gone before.

        Raises:
            BackendError: If Redis failed.
        """
        watched = [
            (producer, state)
            for producer, state in producers.items()
            if state.startswith(b"open:")
            and state.endswith(LIVE_SUFFIX.encode())
            and not self.gone(topic, producer, state)
        ]
        if not watched:
            return []
        keys = [self._key(topic, producer) for producer, _ in watched]
        # The hash was read before: a producer that ended since (its last message deletes
        # its alive key and records the end) must not be taken for gone. So its state is
        # read again with the key, in one round trip, and only a state that did not
        # change counts.
        hash_key = self._producers_key(topic)
        pipe = self._conn.once.pipeline(transaction=False)
        for (producer, _), key in zip(watched, keys, strict=True):
            if key is not None:
                pipe.exists(key)
                pipe.hget(hash_key, producer)
        with self._conn.mapped_errors(f"check the producers of topic {topic!r}", command="EXISTS"):
            replies = iter(pipe.execute())
        expired = []
        for (producer, state), key in zip(watched, keys, strict=True):
            # A producer id no publisher could use (a forged entry) has no alive key.
            if key is None:
                expired.append((producer, state))
                continue
            lives, now = next(replies), next(replies)
            if not lives and self.records.state(topic, producer, now) == state:
                expired.append((producer, state))
        return expired

    def finished_run(
        self, topic: str, producers: dict[bytes, bytes]
    ) -> list[tuple[bytes, bytes]] | None:
        """The producers that stopped beating, if every other one of ``producers`` ended.

        None while a producer of the run is still open (or beating).

        Raises:
            BackendError: If Redis failed.
        """
        expired = self.expired(topic, producers)
        stopped = {producer for producer, _ in expired}
        if all(s.startswith(b"end:") or p in stopped for p, s in producers.items()):
            return expired
        return None

    def mark_gone(self, topic: str, producers: list[tuple[bytes, bytes]]) -> None:
        """Count these ``(producer, state)`` of ``topic`` as gone (reported, or not to be)."""
        self._gone.update((topic, producer, state) for producer, state in producers)

    def _key(self, topic: str, producer: bytes) -> str | None:
        try:
            return self._alive_key(topic, producer.decode(errors="replace"))
        except ConfigurationError:
            return None


def _gone(kind: str, topic: str, producer: str) -> MessageLossError:
    return MessageLossError(
        f"Producer {producer!r} of {kind} {topic!r} stopped without ending it: its "
        "heartbeats stopped (it was killed, or cut off from Redis). What it had not "
        "published, its end included, is possibly lost; it counts as ended.",
        topic=topic,
        producer=producer,
        possible=True,
        gone=True,
    )

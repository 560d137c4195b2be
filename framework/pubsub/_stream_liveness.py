"""Which producers of a durable topic stopped without ending it (see :mod:`._stream_publisher`).

A producer that sends heartbeats is recorded as ``open:<run>:live`` and keeps an alive
key. An idle subscriber looks, now and then, for such producers whose key has expired:
each is reported once per run as gone, a possible loss of whatever it had not published,
and counts as ended from then on.
"""

from __future__ import annotations

import time
from typing import Final

from framework.connection import RedisConnection
from framework.exceptions import MessageLossError
from framework.pubsub._stream_publisher import LIVE_SUFFIX

__all__ = ["Liveness"]

#: Seconds between two looks of an idle subscriber at its topics' producers.
CHECK_EVERY_S: Final = 1.0


class Liveness:
    """Finds the watched producers of durable topics whose alive key has expired.

    Args:
        connection: The subscriber's connection.
    """

    def __init__(self, connection: RedisConnection) -> None:
        self._conn = connection
        self._gone: set[tuple[str, bytes, bytes]] = set()  # (topic, producer, its state)
        self._next_at = 0.0

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
        watched = [
            (producer, state)
            for producer, state in producers.items()
            if state.startswith(b"open:")
            and state.endswith(LIVE_SUFFIX.encode())
            and not self.gone(topic, producer, state)
        ]
        if not watched:
            return []
        keys = self._conn.keys
        pipe = self._conn.once.pipeline(transaction=False)
        for producer, _ in watched:
            pipe.exists(keys.events_alive(topic, producer.decode(errors="replace")))
        with self._conn.mapped_errors(f"check the producers of topic {topic!r}", command="EXISTS"):
            alive = pipe.execute()
        losses = []
        for (producer, state), lives in zip(watched, alive, strict=True):
            if not lives:
                self._gone.add((topic, producer, state))
                losses.append(_gone(topic, producer.decode(errors="replace")))
        return losses


def _gone(topic: str, producer: str) -> MessageLossError:
    return MessageLossError(
        f"Producer {producer!r} of durable topic {topic!r} stopped without ending it: its "
        "heartbeats stopped (it was killed, or cut off from Redis). What it had not "
        "published, its end included, is possibly lost; it counts as ended.",
        topic=topic,
        producer=producer,
        possible=True,
        gone=True,
    )

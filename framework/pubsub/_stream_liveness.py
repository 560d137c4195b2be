"""Which producers of a topic stopped without ending it (durable and list topics).

A producer that sends heartbeats is recorded in the topic's producers hash as
``open:<run>:live`` and keeps an alive key (see :mod:`._stream_publisher` and
:mod:`.lists`). An idle subscriber looks, now and then, for such producers whose key
has expired: each is reported once per run as gone, a possible loss of whatever it had
not published, and counts as ended from then on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, MessageLossError
from framework.pubsub._stream_publisher import LIVE_SUFFIX

__all__ = ["Liveness"]

#: Seconds between two looks of an idle subscriber at its topics' producers.
CHECK_EVERY_S: Final = 1.0


class Liveness:
    """Finds the watched producers of topics whose alive key has expired.

    Args:
        connection: The subscriber's connection.
        alive_key: ``(topic, producer)`` -> the producer's alive key; durable topics'
            by default.
        kind: What the topics are, for messages ("durable topic", "list topic").
    """

    def __init__(
        self,
        connection: RedisConnection,
        alive_key: Callable[[str, str], str] | None = None,
        kind: str = "durable topic",
    ) -> None:
        self._conn = connection
        self._alive_key = alive_key or connection.keys.events_alive
        self._kind = kind
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
        pipe = self._conn.once.pipeline(transaction=False)
        for key in keys:
            if key is not None:
                pipe.exists(key)
        with self._conn.mapped_errors(f"check the producers of topic {topic!r}", command="EXISTS"):
            replies = iter(pipe.execute())
        # A producer id no publisher could use (a forged entry) has no alive key.
        alive = [key is not None and next(replies) for key in keys]
        return [item for item, lives in zip(watched, alive, strict=True) if not lives]

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

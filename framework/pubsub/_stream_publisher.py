"""Appending to durable topics: :class:`RedisStreamPublisher` (see :mod:`.streams`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

from framework.buffers import Segments
from framework.connection import RedisConnection, mapped_errors
from framework.exceptions import ConfigurationError
from framework.pubsub._shim import RedisShim

__all__ = ["DEFAULT_MAXLEN", "DEFAULT_TTL", "FIELD", "RedisStreamPublisher"]

#: Entries a durable topic keeps (approximately); older ones are trimmed.
DEFAULT_MAXLEN: Final = 100_000
#: Safety-net lifetime (s) of a topic's stream and end marker, refreshed by every publish.
DEFAULT_TTL: Final = 7 * 24 * 3600.0
#: Field of a stream entry holding the message.
FIELD: Final = b"m"


class RedisStreamPublisher(RedisShim):
    """Append messages to per-topic Redis streams (durable topics).

    Args:
        connection: Where to publish; not closed by the publisher (unless built by
            :meth:`from_url`). Oversized inline objects are spilled to a store on it.
        maxlen: Keep about this many entries per topic (``None``: never trim).
        ttl: Expire a topic's stream this many seconds after its last publish
            (``None``: never).

    Attributes:
        connection: The connection in use.
    """

    accepts_segments: Final = True

    def __init__(
        self,
        connection: RedisConnection,
        *,
        maxlen: int | None = DEFAULT_MAXLEN,
        ttl: float | None = DEFAULT_TTL,
    ) -> None:
        if maxlen is not None and (type(maxlen) is not int or maxlen < 1):
            raise ConfigurationError(f"maxlen must be a positive int or None, got {maxlen!r}.")
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self._maxlen = maxlen
        self._ttl_ms = None if ttl is None else max(1, round(ttl * 1000))

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStreamPublisher:
        """Connect to ``url`` and return a publisher that owns (and closes) that connection."""
        publisher = cls(RedisConnection.from_url(url), **kwargs)
        publisher._owns_connection = True
        return publisher

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Append ``message`` to the topic's stream, once (no blind retry).

        Raises:
            BackendError: If Redis failed; the entry may or may not have been added
                (consumers drop a resent duplicate by its sequence numbers).
        """
        self._append(topic, message, final=False)

    def send_final_message(self, topic: str, message: bytes | Segments) -> None:
        """Append the topic's last message and mark the topic ended, atomically.

        Raises:
            BackendError: If Redis failed.
        """
        self._append(topic, message, final=True)

    def send_message_with_writes(
        self,
        topic: str,
        message: bytes | Segments,
        writes: Sequence[tuple[str, Any]],
        *,
        px: int | None,
        final: bool = False,
    ) -> None:
        """``SET`` the objects' values, then append ``message``.

        One round trip; two for a final message, whose entry and end marker are
        written in a transaction of their own (the values live in other slots).

        Raises:
            BackendError: If Redis failed; resending is safe (the SETs are idempotent).
        """
        self._append(topic, message, final=final, writes=writes, px=px)

    def _append(
        self,
        topic: str,
        message: bytes | Segments,
        *,
        final: bool,
        writes: Sequence[tuple[str, Any]] = (),
        px: int | None = None,
    ) -> None:
        key = self.connection.keys.events(topic)
        value = self.connection.bulk(message)
        with self._errors(f"append to topic {topic!r}", command="XADD"):
            if writes and final:
                pipe = self.connection.once.pipeline(transaction=False)
                for name, data in writes:
                    pipe.set(name, data, px=px)
                pipe.execute()
            if not writes and not final and self._ttl_ms is None:
                self.connection.once.xadd(key, {FIELD: value}, maxlen=self._maxlen)
                return
            # One slot (shared hash tag), so a transaction works on a cluster too.
            pipe = self.connection.once.pipeline(transaction=final)
            for name, data in () if final else writes:
                pipe.set(name, data, px=px)
            pipe.xadd(key, {FIELD: value}, maxlen=self._maxlen)
            if final:
                pipe.set(self.connection.keys.events_end(topic), b"1", px=self._ttl_ms)
            if self._ttl_ms is not None:
                pipe.pexpire(key, self._ttl_ms)
            pipe.execute()

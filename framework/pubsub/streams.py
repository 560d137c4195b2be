"""Durable topics on Redis streams: replay, consumer groups, claiming a dead consumer's work.

One Redis stream per topic, ``<prefix>:events:{<topic>}``, each entry holding one
message in field ``m``. The publisher trims the stream to about ``maxlen``
entries (``MAXLEN ~``) and refreshes a safety-net TTL. Without a group, a
subscriber reads every entry from ``start`` (``"0"`` replays the stream, ``"$"``
only new entries, or an entry id). With a group, members share the entries
(``XREADGROUP``); an entry stays pending until the consumer acknowledges it,
which the stream layer does once the entry's last object is handed over, and a
member's pending entries are claimed by a live member after ``claim_idle``
seconds (``XAUTOCLAIM``).

End of stream in a group: the end-of-stream event reaches one member only. So
the publisher marks the topic ended (``<stream key>:end``, same hash tag) in the
same transaction as the final entry, and an idle member ends a topic once it is
marked, nothing is left to deliver and nothing is pending in the group.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from framework.connection import MAX_BLOCK_MS, RedisConnection, mapped_errors
from framework.exceptions import ConfigurationError, MessageLossError, ReceiveTimeout
from framework.pubsub._shim import RedisShim
from framework.pubsub._stream_publisher import (
    DEFAULT_MAXLEN,
    DEFAULT_TTL,
    FIELD,
    RedisStreamPublisher,
)
from framework.pubsub.protocols import UNSET, Unset

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_TTL",
    "RedisStreamPublisher",
    "RedisStreamSubscriber",
]

logger = logging.getLogger(__name__)


class RedisStreamSubscriber(RedisShim):
    """Read durable topics, alone (replay) or as a member of a consumer group.

    Args:
        connection: Where to read (its ``blocking`` client for the bounded waits).
        topic: A topic or several.
        group: Consumer group to join (created at ``start`` if missing); ``None``
            reads every entry.
        consumer: This member's name in the group (default: host-pid-random). A
            restarted member with the same name first gets its own pending entries.
        start: Where to begin: ``"0"`` (the whole retained stream), ``"$"`` (new
            entries only) or an entry id. For a group, used only when creating it.
        timeout: Longest wait (s) of :meth:`next_message`; ``None`` waits forever.
        count: Entries fetched per read.
        claim_idle: A member claims entries another member left pending this long (s).

    Attributes:
        topics: The topics read.
        complete: True without a group (every entry, in order); False in a group.
        acks: True in a group: entries stay pending until :meth:`ack_message`.
        group: The consumer group, or ``None``.
        consumer: This member's name.
    """

    def __init__(
        self,
        connection: RedisConnection,
        topic: str | Sequence[str],
        *,
        group: str | None = None,
        consumer: str | None = None,
        start: str = "0",
        timeout: float | None = None,
        count: int = 100,
        claim_idle: float = 30.0,
    ) -> None:
        self.topics: tuple[str, ...] = (topic,) if isinstance(topic, str) else tuple(topic)
        if not self.topics:
            raise ConfigurationError("A subscriber needs at least one topic.")
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.complete = group is None
        self.acks = group is not None
        self._timeout = timeout
        self._count = count
        self._claim_idle_ms = max(1, round(claim_idle * 1000))
        self._keys = {connection.keys.events(t): t for t in self.topics}
        self._cursor: dict[str, str] = {}
        self._buffer: deque[tuple[str, bytes, bytes]] = deque()
        self._current: tuple[str, bytes] | None = None
        self._ended: set[str] = set()
        self._next_claim = 0.0
        self._lock = threading.Lock()
        self._setup(start)

    def _setup(self, start: str) -> None:
        client = self.connection.client
        with self._errors(f"open durable topic(s) {list(self.topics)!r}"):
            for key in self._keys:
                if self.group is None:
                    self._cursor[key] = _last_id(client, key) if start == "$" else start
                    continue
                self._cursor[key] = "0"  # this member's own pending entries first
                try:
                    client.xgroup_create(key, self.group, id=start, mkstream=True)
                except ResponseError as exc:  # BUSYGROUP: the group exists, which is fine
                    if "BUSYGROUP" not in str(exc):
                        raise

    @classmethod
    def from_url(cls, url: str, topic: str | Sequence[str], **kwargs: Any) -> RedisStreamSubscriber:
        """Connect to ``url`` and return a subscriber that owns (and closes) that connection."""
        connection = RedisConnection.from_url(url)
        try:
            subscriber = cls(connection, topic, **kwargs)
        except BaseException:
            connection.close()
            raise
        subscriber._owns_connection = True
        return subscriber

    def __iter__(self) -> RedisStreamSubscriber:
        return self

    def __next__(self) -> bytes:
        return self.next_message()

    def next_message(self, *, timeout: float | Unset | None = UNSET) -> bytes:
        """Return the next entry's message.

        Args:
            timeout: Overrides the constructor's timeout for this call.

        Raises:
            StopIteration: If closed, or (in a group) once every topic has ended.
            ReceiveTimeout: If nothing arrived in time.
            MessageLossError: If pending entries were trimmed before delivery.
            BackendError: If Redis failed.
        """
        limit = self._timeout if isinstance(timeout, Unset) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                if self._closed or len(self._ended) == len(self._keys):
                    raise StopIteration
                if self._buffer:
                    key, entry_id, data = self._buffer.popleft()
                    self._current = (key, entry_id)
                    return data
                left = MAX_BLOCK_MS / 1000 if deadline is None else deadline - time.monotonic()
                self._fill(max(0, min(round(left * 1000), MAX_BLOCK_MS)))
                if self._buffer:
                    continue
            if deadline is not None and time.monotonic() >= deadline:
                raise ReceiveTimeout(f"No entry on topic(s) {self.topics} within {limit} s.")

    def poll_message(self) -> bytes | None:
        """Return the next message if one is already waiting, else ``None``.

        Raises:
            StopIteration: If the subscriber is closed.
            MessageLossError: As :meth:`next_message`.
        """
        with self._lock:
            if self._closed or len(self._ended) == len(self._keys):
                raise StopIteration
            if not self._buffer:
                self._fill(0)
            if not self._buffer:
                return None
            key, entry_id, data = self._buffer.popleft()
            self._current = (key, entry_id)
            return data

    def ack_message(self) -> None:
        """Acknowledge the entry last returned (groups only; idempotent)."""
        current, self._current = self._current, None
        if current is None or self.group is None:
            return
        key, entry_id = current
        with self._errors(f"acknowledge entry {entry_id!r} of {key!r}"):
            self.connection.client.xack(key, self.group, entry_id)

    # -- reading -----------------------------------------------------------------------------

    def _fill(self, block_ms: int) -> None:
        """Fill the buffer from Redis, waiting at most ``block_ms``."""
        if self.group is not None and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
            self._claim()
            if self._buffer:
                return
        live = [k for k in self._keys if self._keys[k] not in self._ended]
        if self.connection.is_cluster and len(live) > 1:
            # Streams in different slots cannot be read by one command.
            for key in live:
                self._read([key], block_ms // len(live))
        else:
            self._read(live, block_ms)
        if not self._buffer and self.group is not None:
            self._check_ended(live)

    def _read(self, keys: list[str], block_ms: int) -> None:
        streams = {k: (">" if self._cursor[k] == ">" else self._cursor[k]) for k in keys}
        with self._errors(f"read durable topic(s) {list(self.topics)!r}"):
            client = self.connection.blocking
            pending = any(c != ">" for c in streams.values()) and self.group is not None
            block = None if pending or block_ms <= 0 else block_ms
            if self.group is None:
                reply = client.xread(streams, count=self._count, block=block)
            else:
                reply = client.xreadgroup(
                    self.group, self.consumer, streams, count=self._count, block=block
                )
        for key, entries in _streams(reply):
            self._take(key, entries, from_pending=streams[key] != ">")

    def _take(self, key: str, entries: list[Any], *, from_pending: bool) -> None:
        trimmed = []
        for entry_id, fields in entries:
            if self.group is None or from_pending:
                self._cursor[key] = _text(entry_id)
            if fields and FIELD in fields:
                self._buffer.append((key, entry_id, fields[FIELD]))
            else:
                trimmed.append(_text(entry_id))
        if from_pending and self.group is not None and not entries:
            self._cursor[key] = ">"  # own pending entries done: new ones from now on
        if trimmed:
            if self.group is not None:  # nothing left to deliver: release them
                with self._errors(f"acknowledge trimmed entries of {key!r}"):
                    self.connection.client.xack(key, self.group, *trimmed)
            self._lost(key, trimmed)

    def _claim(self) -> None:
        """Take over entries other members left pending longer than ``claim_idle``."""
        assert self.group is not None
        for key in self._keys:
            with self._errors(f"claim pending entries of {key!r}"):
                reply = self.connection.once.xautoclaim(
                    key, self.group, self.consumer, self._claim_idle_ms, "0-0", count=self._count
                )
            entries, deleted = reply[1], reply[2] if len(reply) > 2 else []
            if entries:
                logger.info("Claimed %d pending entries of %s", len(entries), key)
            self._take(key, entries, from_pending=False)
            if deleted:
                self._lost(key, [_text(d) for d in deleted])

    def _check_ended(self, keys: list[str]) -> None:
        """End idle topics that are marked ended, fully delivered and not pending."""
        client = self.connection.client
        for key in keys:
            topic = self._keys[key]
            with self._errors(f"check whether topic {topic!r} ended"):
                if not client.exists(self.connection.keys.events_end(topic)):
                    continue
                left = client.xreadgroup(self.group, self.consumer, {key: ">"}, count=self._count)
                entries = [e for _, es in _streams(left) for e in es]
                if entries:
                    self._take(key, entries, from_pending=False)
                    continue
                if int(client.xpending(key, self.group)["pending"]) == 0:
                    logger.debug("Topic %r ended for group member %s", topic, self.consumer)
                    self._ended.add(topic)

    def _lost(self, key: str, ids: list[str]) -> None:
        topic = self._keys[key]
        raise MessageLossError(
            f"{len(ids)} pending entr{'y' if len(ids) == 1 else 'ies'} of durable topic "
            f"{topic!r} were trimmed before delivery (first id {ids[0]}); raise maxlen.",
            topic=topic,
        )

    def _release(self) -> None:
        """Stop reading; unacknowledged entries stay pending for other members."""
        with self._lock:
            self._buffer.clear()


def _streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """Normalize XREAD/XREADGROUP replies (RESP2 list or RESP3 map) to (key, entries)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(_text(key), list(entries)) for key, entries in items]


def _last_id(client: Any, key: str) -> str:
    last = client.xrevrange(key, count=1)
    return _text(last[0][0]) if last else "0"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

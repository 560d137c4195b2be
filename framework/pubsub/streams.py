"""Durable topics on Redis streams: replay, consumer groups, claiming a dead consumer's work.

One Redis stream per topic, ``<prefix>:events:{<topic>}``, each entry holding one
message in field ``m``. The publisher trims the stream to about ``maxlen``
entries (``MAXLEN ~``) and refreshes a safety-net TTL. Without a group, a
subscriber reads every entry from ``start``. With a group, members share the
entries (``XREADGROUP``); an entry stays pending until the consumer acknowledges
it, which the stream layer does once the entry's object has reached the caller,
and a member's pending entries are claimed by a live member after
``claim_idle`` seconds (``XAUTOCLAIM``).

Runs: producers record themselves in the topic's producers hash (see
:mod:`._stream_publisher`). A topic whose producers have all ended holds a
finished run. The first message of a new run empties it once every group has
consumed it, so a topic name can be used again: a subscriber opened after that
reads the new run only. A member of a group that consumed the finished run waits
for the next run instead of ending at once. A subscriber opened between two runs
replays the finished one unless it asks for ``start="$"`` (a new group too).

End of stream in a group: the end-of-stream event reaches one member only, so an
idle member ends a topic once every producer recorded in the run has ended,
nothing is left to deliver and nothing is pending in the group.

A producer that sends heartbeats and stops without ending a topic (killed, or cut off)
is reported by each idle subscriber as gone once its alive key expired, and counts as
ended (:mod:`._stream_liveness`).

Reading itself (one pass of reads, claims and checks) is :mod:`._stream_reading`.

Faults: a connection failure is ridden out for ``max_outage`` seconds (Redis
restarting); a group that vanished (Redis restarted without persistence) is
created again and the gap is reported as a possible loss, and so is a restart that a
member learns from the server's run id (another member created the group again
first); pending entries that were trimmed before delivery are reported as lost.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from framework._raw import PinnedConnection
from framework._timeouts import checked_timeout
from framework.connection import MAX_BLOCK_MS, MAX_OUTAGE, RedisConnection, mapped_errors
from framework.exceptions import BackendUnavailable, MessageLossError, ReceiveTimeout
from framework.pubsub._outage import READ_GRACE, Outage, outage_note, unanswered_note
from framework.pubsub._server_runs import ServerRun
from framework.pubsub._shim import RedisShim, topic_tuple, wait_limit
from framework.pubsub._stream_liveness import Liveness
from framework.pubsub._stream_publisher import (
    DEFAULT_MAXLEN,
    DEFAULT_TTL,
    RedisStreamPublisher,
)
from framework.pubsub._stream_reading import RETRY_PAUSE_S, StreamReading
from framework.pubsub.protocols import UNSET, Unset
from framework.redis_streams import group_caught_up, last_id

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_TTL",
    "RedisStreamPublisher",
    "RedisStreamSubscriber",
]

#: Entry ids a group member remembers having returned (skipped when re-read after an outage).
REMEMBERED: Final = 10_000


class RedisStreamSubscriber(StreamReading, RedisShim):
    """Read durable topics, alone (replay) or as a member of a consumer group.

    Args:
        connection: Where to read (its ``blocking`` client for the bounded waits).
        topic: A topic or several.
        group: Consumer group to join (created if missing); ``None`` reads every entry.
        consumer: This member's name in the group (default: host-pid-random). A
            restarted member with the same name first gets its own pending entries.
        start: Where to begin: ``"0"`` (the whole retained stream), ``"$"`` (new
            entries only) or an entry id. For a group, used only when creating it.
        timeout: Longest wait (s) of :meth:`next_message`; ``None`` waits forever.
        count: Entries fetched per read.
        claim_idle: A member claims entries another member left pending this long (s).
        max_outage: Seconds Redis may stay unreachable before a read raises.

    Attributes:
        topics: The topics read.
        durable: True: entries stay until trimmed, so consumers evict objects only
            after handing them over.
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
        max_outage: float = MAX_OUTAGE,
    ) -> None:
        self.topics = topic_tuple(topic)
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.complete = group is None
        self.acks = group is not None
        self.durable = True
        self._timeout = checked_timeout(timeout, type(self).__name__)
        self._count = count
        self._returned: deque[bytes] = deque(maxlen=REMEMBERED)
        self._claim_idle_ms = max(1, round(claim_idle * 1000))
        self._outage = Outage(max_outage)
        self._keys = {connection.keys.events(t): t for t in self.topics}
        self._cursor: dict[str, str] = {}
        self._buffer: deque[tuple[str, bytes, bytes]] = deque()
        self._losses: deque[MessageLossError] = deque()
        self._current: tuple[str, bytes] | None = None
        self._ended: set[str] = set()
        self._finished_runs: dict[str, dict[bytes, bytes]] = {}
        self._liveness = Liveness(connection)
        # Group-less: the last entry read per stream, to see whether it is still there.
        self._last_read: dict[str, str] = {}
        self._next_claim = 0.0
        # Where the next claim goes on in each pending list (XAUTOCLAIM's cursor).
        self._claim_from: dict[str, str] = {}
        self._lock = threading.Lock()
        # A read per few messages: a connection of its own skips the pool's cost.
        self._pinned = PinnedConnection(connection.blocking)
        # A member tells a restart that emptied the topic by the server's run id.
        self._server = None if group is None else ServerRun(connection)
        for key in self._keys:
            self._open(key, start)

    def _open(self, key: str, start: str) -> None:
        """Set the topic's cursor; in a group, create it or note a finished run it consumed."""
        if self.group is None:
            if start != "$":
                self._cursor[key] = start
                return
            self._cursor[key] = last_id(self.connection, key)
            # Producers gone before this subscriber came cannot lose it anything: it asked
            # only for what comes next.
            topic = self._keys[key]
            self._liveness.mark_gone(topic, self._liveness.expired(topic, self._producers(key)))
            return
        self._cursor[key] = "0"  # this member's own pending entries first
        if self._ensure_group(key, start):
            return
        producers = self._producers(key)
        if not producers:
            return
        # Producers of that run that stopped beating count as ended (not as its losses).
        stopped = self._liveness.finished_run(self._keys[key], producers)
        if stopped is not None and group_caught_up(self.connection, key, self.group):
            # The group consumed this run already: its end says nothing about the next.
            self._liveness.mark_gone(self._keys[key], stopped)
            self._finished_runs[key] = producers

    def verify_records(self, secret: bytes) -> None:
        """Act only on producer records signed with ``secret`` (a consumer's shared secret).

        A topic's producers hash tells group members when it ended, and every subscriber
        which producers stopped beating. From now on a record that is unsigned or does not
        verify (forged in Redis) is logged and counts as a producer that has not ended.
        """
        with self._lock:
            self._liveness.records.verify_with(secret)

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
            MessageLossError: If pending entries were trimmed before delivery (lost),
                or the group vanished and was created again (possibly lost); the
                next call carries on.
            BackendError: If Redis failed, or stayed unreachable for ``max_outage``.
        """
        limit = wait_limit(timeout, self._timeout, type(self).__name__)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                data = self._next_buffered()
                if data is not None:
                    return data
                left = MAX_BLOCK_MS / 1000 if deadline is None else deadline - time.monotonic()
                block_ms = max(0, min(round(left * 1000), MAX_BLOCK_MS))
                # A caller with a deadline does not wait out the socket timeout on a
                # frozen Redis: the reply is due when the BLOCK ends.
                self._fill(block_ms, None if deadline is None else block_ms / 1000 + READ_GRACE)
                if self._buffer or self._losses:
                    continue
            if deadline is not None and time.monotonic() >= deadline:
                raise ReceiveTimeout(
                    f"No entry on topic(s) {self.topics} within {limit} s."
                    + outage_note(self._outage.since)
                    + unanswered_note(self.unanswered)
                )

    def poll_message(self) -> bytes | None:
        """Return the next message if one is already waiting, else ``None``.

        Raises:
            StopIteration: If the subscriber is closed.
            MessageLossError: As :meth:`next_message`.
        """
        with self._lock:
            data = self._next_buffered()
            if data is None:
                self._fill(0)
                data = self._next_buffered()
            return data

    def buffered_message(self) -> bytes | None:
        """Return the next message already read from Redis, else ``None`` (never reads).

        Raises:
            StopIteration: If the subscriber is closed.
            MessageLossError: As :meth:`next_message`.
        """
        with self._lock:
            return self._next_buffered()

    def _next_buffered(self) -> bytes | None:
        """The next buffered message; raise a pending loss or the end first."""
        if self._losses:
            raise self._losses.popleft()
        if self._closed or len(self._ended) == len(self._keys):
            raise StopIteration
        if not self._buffer:
            return None
        key, entry_id, data = self._buffer.popleft()
        self._current = (key, entry_id)
        if self.group is not None:
            self._returned.append(entry_id)
        return data

    def ack_message(self) -> None:
        """Acknowledge the entry last returned (groups only; idempotent).

        Rides out an unreachable Redis for ``max_outage`` seconds, as reads do (an
        ``XACK`` sent twice is harmless).

        Raises:
            BackendError: If Redis failed, or stayed unreachable for ``max_outage``; the
                entry stays current, so calling this again acknowledges it.
        """
        current = self._current
        if current is None or self.group is None:
            return
        key, entry_id = current
        deadline = time.monotonic() + self._outage.limit
        while True:
            try:
                with self._errors(f"acknowledge entry {entry_id!r} of {key!r}"):
                    self.connection.client.xack(key, self.group, entry_id)
                break
            except BackendUnavailable:
                if time.monotonic() >= deadline or self._closed:
                    raise
                time.sleep(RETRY_PAUSE_S)
        self._current = None

    def _release(self) -> None:
        """Stop reading; unacknowledged entries stay pending for other members."""
        with self._lock:
            self._buffer.clear()
            self._pinned.close()

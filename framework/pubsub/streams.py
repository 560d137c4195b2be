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

Faults: a connection failure is ridden out for ``max_outage`` seconds (Redis
restarting); a group that vanished (Redis restarted without persistence) is
created again and the gap is reported as a possible loss; pending entries that
were trimmed before delivery are reported as lost.
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
from typing import Any, Final

from framework._raw import PinnedConnection
from framework.connection import MAX_BLOCK_MS, RedisConnection, mapped_errors
from framework.exceptions import (
    BackendError,
    BackendUnavailable,
    MessageLossError,
    ReceiveTimeout,
)
from framework.pubsub._shim import RedisShim, topic_tuple
from framework.pubsub._stream_liveness import Liveness
from framework.pubsub._stream_losses import (
    reset_of,
    run_emptied,
    trimmed_before_delivery,
    vanished,
)
from framework.pubsub._stream_publisher import (
    DEFAULT_MAXLEN,
    DEFAULT_TTL,
    FIELD,
    RedisStreamPublisher,
)
from framework.pubsub.protocols import UNSET, Unset
from framework.redis_streams import (
    ensure_group,
    group_caught_up,
    is_missing_group,
    last_id,
    read_streams,
    stream_entries,
    text,
)

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_TTL",
    "RedisStreamPublisher",
    "RedisStreamSubscriber",
]

logger = logging.getLogger(__name__)

#: Default seconds a subscriber rides out an unreachable Redis before raising.
MAX_OUTAGE: Final = 30.0
#: Pause (s) between attempts while Redis is unreachable.
RETRY_PAUSE_S: Final = 0.2


#: Entry ids a group member remembers having returned (skipped when re-read after an outage).
REMEMBERED: Final = 10_000


class RedisStreamSubscriber(RedisShim):
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
        self._timeout = timeout
        self._count = count
        self._returned: deque[bytes] = deque(maxlen=REMEMBERED)
        self._claim_idle_ms = max(1, round(claim_idle * 1000))
        self._max_outage = max_outage
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
        self._down_since: float | None = None
        self._lock = threading.Lock()
        # A read per few messages: a connection of its own skips the pool's cost.
        self._pinned = PinnedConnection(connection.blocking)
        for key in self._keys:
            self._open(key, start)

    def _open(self, key: str, start: str) -> None:
        """Set the topic's cursor; in a group, create it or note a finished run it consumed."""
        if self.group is None:
            self._cursor[key] = last_id(self.connection, key) if start == "$" else start
            return
        self._cursor[key] = "0"  # this member's own pending entries first
        if self._ensure_group(key, start):
            return
        producers = self._producers(key)
        finished = bool(producers) and all(v.startswith(b"end:") for v in producers.values())
        if finished and group_caught_up(self.connection, key, self.group):
            # The group consumed this run already: its end says nothing about the next.
            self._finished_runs[key] = producers

    def _ensure_group(self, key: str, start: str) -> bool:
        """Create this subscriber's group on ``key`` (counting trimmed entries) if missing."""
        assert self.group is not None
        lost_key = self.connection.keys.events_lost(self._keys[key])
        ttl_ms = round(DEFAULT_TTL * 1000)
        return ensure_group(
            self.connection, key, self.group, start=start, ttl_ms=ttl_ms, counted=lost_key
        )

    def _producers(self, key: str) -> dict[bytes, bytes]:
        producers = self.connection.keys.events_end(self._keys[key])
        with self._errors(f"read the producers of {key!r}", command="HGETALL"):
            return dict(self.connection.client.hgetall(producers))

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
        limit = self._timeout if isinstance(timeout, Unset) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                data = self._next_buffered()
                if data is not None:
                    return data
                left = MAX_BLOCK_MS / 1000 if deadline is None else deadline - time.monotonic()
                self._fill(max(0, min(round(left * 1000), MAX_BLOCK_MS)))
                if self._buffer or self._losses:
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
        deadline = time.monotonic() + self._max_outage
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

    # -- reading -----------------------------------------------------------------------------

    def _fill(self, block_ms: int) -> None:
        """Fill the buffer from Redis, waiting at most ``block_ms``; ride out outages."""
        try:
            self._fill_once(block_ms)
        except BackendUnavailable:
            now = time.monotonic()
            self._down_since = self._down_since or now
            if now - self._down_since >= self._max_outage:
                self._down_since = None
                raise
            logger.warning("Redis unreachable while reading %s; retrying", list(self.topics))
            if self.group is not None:
                # A lost XREADGROUP reply leaves entries pending for this member that it
                # never saw: read its own pending entries again once Redis is back.
                self._cursor = dict.fromkeys(self._cursor, "0")
            time.sleep(min(RETRY_PAUSE_S, max(block_ms, 1) / 1000))
            return
        except BackendError as exc:
            if self.group is None or not is_missing_group(exc):
                raise
            self._recreate_groups()
        self._down_since = None

    def _fill_once(self, block_ms: int) -> None:
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
        producers: dict[str, dict[bytes, bytes]] = {}  # read once per pass, by key
        if not self._buffer and block_ms > 0 and self._liveness.due():
            producers = self._check_gone(live)
        if not self._buffer and self.group is not None:
            if block_ms > 0:
                self._check_trimmed(live)
            self._check_ended(live, producers)
        elif not self._buffer and block_ms > 0:
            self._check_vanished(live)

    def _check_gone(self, keys: list[str]) -> dict[str, dict[bytes, bytes]]:
        """Report producers that stopped beating without ending a topic (see module doc).

        Returns:
            The producers hash of each key, as read.
        """
        producers = {key: self._producers(key) for key in keys}
        for key in keys:
            self._losses.extend(self._liveness.check(self._keys[key], producers[key]))
        return producers

    def _recreate_groups(self) -> None:
        """The group vanished (Redis restarted or the stream expired): create it again."""
        assert self.group is not None
        for key, topic in self._keys.items():
            if self._ensure_group(key, "0"):
                self._cursor[key] = "0"
                self._losses.append(
                    MessageLossError(
                        f"Consumer group {self.group!r} of durable topic {topic!r} was gone "
                        "(Redis restarted without persistence, or the stream expired) and was "
                        "created again: entries stored before that were possibly lost.",
                        topic=topic,
                        possible=True,
                    )
                )

    def _read(self, keys: list[str], block_ms: int) -> None:
        streams = {k: self._cursor[k] for k in keys}
        with self._errors(f"read durable topic(s) {list(self.topics)!r}"):
            client = self.connection.blocking
            pending = any(c != ">" for c in streams.values()) and self.group is not None
            block = None if pending or block_ms <= 0 else block_ms
            group = None if self.group is None else (self.group, self.consumer)
            reply = read_streams(
                client, streams, count=self._count, block=block, group=group, pinned=self._pinned
            )
        for key, entries in reply:
            name = text(key)
            self._take(name, entries, from_pending=streams[name] != ">")

    def _take(self, key: str, entries: list[Any], *, from_pending: bool) -> None:
        trimmed, foreign, resets = [], [], []
        for entry_id, fields in entries:
            if self.group is None or from_pending:
                self._cursor[key] = text(entry_id)
            if from_pending and entry_id in self._returned:
                continue  # returned before the outage: the caller has it
            if fields and FIELD in fields:
                self._buffer.append((key, entry_id, fields[FIELD]))
            elif fields and (last := reset_of(fields)) is not None:
                resets.append(text(entry_id))
                self._run_emptied(key, last)
            elif fields:  # not a publisher's entry: no message of ours was lost
                foreign.append(text(entry_id))
            else:  # a pending entry whose fields are gone: trimmed
                trimmed.append(text(entry_id))
        if from_pending and self.group is not None and not entries:
            self._cursor[key] = ">"  # own pending entries done: new ones from now on
        if foreign:
            logger.warning(
                "Skipping entries %s of durable topic %r: they hold no message (field %r); "
                "something other than a publisher wrote them.",
                foreign,
                self._keys[key],
                FIELD.decode(),
            )
        if (trimmed or foreign or resets) and self.group is not None:  # nothing to deliver
            with self._errors(f"acknowledge undeliverable entries of {key!r}"):
                self.connection.client.xack(key, self.group, *trimmed, *foreign, *resets)
        if trimmed:
            self._lost(key, trimmed)
        if self.group is None and entries:
            self._last_read[key] = text(entries[-1][0])

    def _check_trimmed(self, keys: list[str]) -> None:
        """Nothing new for the group: were entries trimmed before it got them?"""
        assert self.group is not None
        for key in keys:
            loss = trimmed_before_delivery(self.connection, key, self._keys[key], self.group)
            if loss is not None:
                self._losses.append(loss)

    def _run_emptied(self, key: str, last: tuple[int, int]) -> None:
        """A new run emptied the one ending at ``last``: was this group-less reader in it?"""
        seen = self._last_read.get(key) if self.group is None else None
        if seen is not None and (loss := run_emptied(self._keys[key], seen, last)):
            self._losses.append(loss)

    def _check_vanished(self, keys: list[str]) -> None:
        """Nothing new for a group-less reader: is the entry it read last still there?"""
        for key in keys:
            seen = self._last_read.get(key)
            loss = None if seen is None else vanished(self.connection, key, self._keys[key], seen)
            if loss is not None:
                del self._last_read[key]  # reported once
                self._losses.append(loss)

    def _claim(self) -> None:
        """Take over entries other members left pending longer than ``claim_idle``."""
        assert self.group is not None
        for key in self._keys:
            # XAUTOCLAIM looks at no more than 10 x count pending entries per call: going
            # on from its cursor reaches every entry, not just the first ones, which
            # entries other members still work on could otherwise fill for good.
            start = self._claim_from.get(key, "0-0")
            with self._errors(f"claim pending entries of {key!r}"):
                reply = self.connection.once.xautoclaim(
                    key, self.group, self.consumer, self._claim_idle_ms, start, count=self._count
                )
            self._claim_from[key] = text(reply[0])  # "0-0" once the whole list was seen
            entries, deleted = reply[1], reply[2] if len(reply) > 2 else []
            if deleted:  # first: XAUTOCLAIM has dropped them already, nothing reports them again
                self._lost(key, [text(d) for d in deleted])
            if entries:
                logger.info("Claimed %d pending entries of %s", len(entries), key)
            self._take(key, entries, from_pending=False)

    def _check_ended(self, keys: list[str], read: dict[str, dict[bytes, bytes]]) -> None:
        """End idle topics whose producers have all ended, fully delivered, none pending.

        Args:
            keys: The topics' stream keys.
            read: Producers hashes already read in this pass, by key.
        """
        client = self.connection.client
        for key in keys:
            topic = self._keys[key]
            producers = read[key] if key in read else self._producers(key)
            if not producers or producers == self._finished_runs.get(key):
                continue  # nothing recorded yet, or the finished run this subscriber skipped
            gone = self._liveness.gone
            if not all(s.startswith(b"end:") or gone(topic, p, s) for p, s in producers.items()):
                continue
            with self._errors(f"check whether topic {topic!r} ended"):
                # Not the retrying client: a resent XREADGROUP > would skip entries.
                left = self.connection.once.xreadgroup(
                    self.group, self.consumer, {key: ">"}, count=self._count
                )
                entries = [e for _, es in stream_entries(left) for e in es]
                if entries:
                    self._take(key, entries, from_pending=False)
                    continue
                if int(client.xpending(key, self.group)["pending"]) == 0:
                    logger.debug("Topic %r ended for group member %s", topic, self.consumer)
                    self._ended.add(topic)

    def _lost(self, key: str, ids: list[str]) -> None:
        topic = self._keys[key]
        self._losses.append(
            MessageLossError(
                f"Lost {len(ids)} pending entr{'y' if len(ids) == 1 else 'ies'} of durable "
                f"topic {topic!r}: trimmed before delivery (ids {ids[0]} to {ids[-1]}); "
                "raise maxlen.",
                topic=topic,
                count=len(ids),
            )
        )

    def _release(self) -> None:
        """Stop reading; unacknowledged entries stay pending for other members."""
        with self._lock:
            self._buffer.clear()
            self._pinned.close()

"""How a durable-topic subscriber fills its buffer: reads, claims, and the checks of an idle pass.

:class:`~framework.pubsub.RedisStreamSubscriber` keeps its public methods, its state and
the rules of the module doc in :mod:`framework.pubsub.streams`; this mixin is one pass
of reading under the subscriber's lock. A pass reads new (or its own pending) entries;
only when that yields nothing does it spend round trips on the checks that find what
cannot be read: producers gone, entries trimmed or vanished, a topic ended in a group.
Each finding is queued as a loss or an end, for the next call to raise in order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Final

from framework._raw import PinnedConnection
from framework.connection import RedisConnection
from framework.exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    MessageLossError,
)
from framework.pubsub._outage import Outage
from framework.pubsub._server_runs import SECTIONS, ServerRun
from framework.pubsub._stream_liveness import Liveness
from framework.pubsub._stream_losses import (
    reset_of,
    run_emptied,
    trimmed_before_delivery,
    vanished,
)
from framework.pubsub._stream_publisher import DEFAULT_TTL, FIELD
from framework.redis_streams import (
    ensure_group,
    is_missing_group,
    read_streams,
    stream_entries,
    text,
)

__all__ = ["RETRY_PAUSE_S", "StreamReading"]

# The subscriber's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.pubsub.streams")

#: Pause (s) between attempts while Redis is unreachable.
RETRY_PAUSE_S: Final = 0.2


class StreamReading:
    """The reading machinery of a :class:`~framework.pubsub.RedisStreamSubscriber`.

    The subscriber's ``__init__`` sets every attribute declared here.
    """

    topics: tuple[str, ...]
    connection: RedisConnection
    group: str | None
    consumer: str
    _errors: Callable[..., AbstractContextManager[None]]
    _count: int
    _returned: deque[bytes]
    _claim_idle_ms: int
    _outage: Outage
    _keys: dict[str, str]
    _cursor: dict[str, str]
    _buffer: deque[tuple[str, bytes, bytes]]
    _losses: deque[MessageLossError]
    _ended: set[str]
    _finished_runs: dict[str, dict[bytes, bytes]]
    _liveness: Liveness
    _last_read: dict[str, str]
    _next_claim: float
    _claim_from: dict[str, str]
    _pinned: PinnedConnection
    #: The error of the last read that Redis did not answer within its caller's wait.
    unanswered: BackendTimeout | None = None
    #: Redis lost the group's stream since this member started (a restart without
    #: persistence, or expiry), as reported: objects named there may be gone with it.
    emptied: bool = False
    _server: ServerRun | None

    def _ensure_group(self, key: str, start: str) -> bool:
        """Create this subscriber's group on ``key`` (counting trimmed entries) if missing."""
        assert self.group is not None
        lost_key = self.connection.keys.events_lost(self._keys[key])
        ttl_ms = round(DEFAULT_TTL * 1000)
        return ensure_group(
            self.connection, key, self.group, start=start, ttl_ms=ttl_ms, counted=lost_key
        )

    def _producers(self, key: str) -> dict[bytes, bytes]:
        """The topic's producers hash (trusted records only); a member also checks the server's run.

        Another member may have created the group again after a restart, so a member
        cannot count on finding it gone (see :mod:`._server_runs`): the run id, read in
        the same round trip, tells it that the hash was emptied since it last looked.
        """
        topic = self._keys[key]
        name = self.connection.keys.events_end(topic)
        with self._errors(f"read the producers of {key!r}", command="HGETALL"):
            if self._server is None or not self._server.served:
                producers = self.connection.client.hgetall(name)
            else:
                pipe = self.connection.client.pipeline(transaction=False)
                pipe.info(*SECTIONS)
                pipe.hgetall(name)
                info, producers = pipe.execute(raise_on_error=False)
                if isinstance(producers, Exception):
                    raise producers
                if self._server.observe(None if isinstance(info, Exception) else info):
                    self._restarted()  # before noting a hash read from the emptied server
        # Given a secret, forged records are left out here: nothing below acts on them.
        read = self._liveness.records.read(topic, producers)
        self._liveness.seen(topic, read)
        return read

    def _restarted(self) -> None:
        """Redis restarted without an append-only file: report it, distrust the ends.

        Should this member find its group gone afterwards, that is the same loss.
        """
        assert self._server is not None
        self._liveness.restarted()
        self.emptied = True
        if self._server.current is not None:
            self._server.reported.add(self._server.current)
        for topic in self.topics:
            self._losses.append(
                MessageLossError(
                    f"Redis restarted without persistence (its run id changed) while group "
                    f"{self.group!r} read durable topic {topic!r}: entries stored before "
                    "that were possibly lost.",
                    topic=topic,
                    possible=True,
                )
            )

    # -- reading -----------------------------------------------------------------------------

    def _fill(self, block_ms: int, wait: float | None = None) -> None:
        """Fill the buffer from Redis, waiting at most ``block_ms``; ride out outages.

        With ``wait`` (a caller's deadline), a read whose reply does not come within
        ``wait`` seconds (Redis frozen: paused, stopped, swapping) returns empty-handed
        instead of waiting out the socket timeout; :attr:`unanswered` says so.
        """
        self.unanswered = None
        try:
            self._fill_once(block_ms, wait)
        except BackendTimeout as exc:
            if wait is None:
                raise
            self.unanswered = exc
            self._reread_pending()
            return
        except BackendUnavailable:
            if self._outage.failed():
                raise
            logger.warning("Redis unreachable while reading %s; retrying", list(self.topics))
            self._reread_pending()
            time.sleep(min(RETRY_PAUSE_S, max(block_ms, 1) / 1000))
            return
        except BackendError as exc:
            if self.group is None or not is_missing_group(exc):
                raise
            self._recreate_groups()
        self._outage.ended()

    def _reread_pending(self) -> None:
        if self.group is not None:
            # A lost XREADGROUP reply leaves entries pending for this member that it
            # never saw: read its own pending entries again once Redis is back.
            self._cursor = dict.fromkeys(self._cursor, "0")

    def _fill_once(self, block_ms: int, wait: float | None = None) -> None:
        if self.group is not None and time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + self._claim_idle_ms / 2000
            self._claim()
            if self._buffer:
                return
        live = [k for k in self._keys if self._keys[k] not in self._ended]
        if self.connection.is_cluster and len(live) > 1:
            # Streams in different slots cannot be read by one command.
            for key in live:
                self._read([key], block_ms // len(live), wait)
        else:
            self._read(live, block_ms, wait)
        if self._buffer and self.group is not None:
            self._note_producers(live)
        producers: dict[str, dict[bytes, bytes]] = {}  # read once per pass, by key
        if not self._buffer and block_ms > 0 and self._liveness.due():
            producers = self._check_gone(live)
        if not self._buffer and self.group is not None:
            if block_ms > 0:
                self._check_trimmed(live)
            self._check_ended(live, producers)
        elif not self._buffer and block_ms > 0:
            self._check_vanished(live)

    def _note_producers(self, keys: list[str]) -> None:
        """Read the producers of topics this busy member knows none of (see ``needs_look``)."""
        for key in keys:
            if not self._liveness.needs_look(self._keys[key]):
                continue
            try:
                self._producers(key)
            except BackendError as exc:  # entries are buffered already: a later look decides
                logger.debug("Producers of %r not read: %s", key, exc)

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
        """The group vanished (Redis restarted or the stream expired): create it again.

        Another member may have created it first: then a restart is this member's to
        report all the same (it learns of it from the server's run id).
        """
        assert self.group is not None
        server = self._server
        restart = server is not None and server.observe(server.read())
        # A restart that this member reported already (from the run id) is the same loss.
        covered = server is not None and server.current in server.reported
        if server is not None:
            server.reported.discard(server.current)
        created = False
        for key, topic in self._keys.items():
            if not self._ensure_group(key, "0"):
                continue
            self._cursor[key] = "0"
            created = True
            if not covered:
                self._losses.append(
                    MessageLossError(
                        f"Consumer group {self.group!r} of durable topic {topic!r} was gone "
                        "(Redis restarted without persistence, or the stream expired) and was "
                        "created again: entries stored before that were possibly lost.",
                        topic=topic,
                        possible=True,
                    )
                )
        if created:
            self.emptied = True
        if restart and not created and not covered:
            self._restarted()
        elif created or restart:
            # The producers hash went with the group: wait for producers to record again.
            self._liveness.restarted()

    def _read(self, keys: list[str], block_ms: int, wait: float | None = None) -> None:
        streams = {k: self._cursor[k] for k in keys}
        with self._errors(f"read durable topic(s) {list(self.topics)!r}"):
            client = self.connection.blocking
            pending = any(c != ">" for c in streams.values()) and self.group is not None
            block = None if pending or block_ms <= 0 else block_ms
            group = None if self.group is None else (self.group, self.consumer)
            reply = read_streams(
                client,
                streams,
                count=self._count,
                block=block,
                group=group,
                pinned=self._pinned,
                timeout=wait,
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
            if not producers and self._liveness.lost_for_good(topic):
                producers = {b"": b"end:"}  # lost with a restart: nobody left to wait for
            if not producers or producers == self._finished_runs.get(key):
                continue  # nothing recorded yet, or the finished run this subscriber skipped
            if not self._liveness.trusts(topic, producers):
                continue  # after a restart: producers may not have recorded themselves yet
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

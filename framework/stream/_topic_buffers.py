"""A producer's per-topic buffers: objects go in, batches go out, failures wait for a caller.

:class:`~framework.stream.StreamProducer` keeps its public methods, and the contracts
they document, in :mod:`framework.stream.producer`; this mixin is what those methods
and the linger thread share. Everything here runs under the producer's lock (the
linger thread holds it while it flushes), so a batch is built, stored and published
by one thread at a time, and the sequence numbers of a topic never interleave.

A failure no caller is waiting for (an aggregator that raised in a linger flush, a
heartbeat lapse) is kept on the topic and raised by the next call on it, worded by
:mod:`framework.stream._producer_errors`.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from framework._core_errors import reworded
from framework.exceptions import BackendError, ClosedError, SerializationError, TopicClosedError
from framework.keys import check_topic
from framework.store import Store
from framework.stream._backlog import BacklogBound
from framework.stream._batches import FailedBatch, Item, Outgoing, TopicState, aggregate
from framework.stream._building import BatchBuilder, approx_size
from framework.stream._heartbeats import Heartbeats
from framework.stream._producer_errors import aggregation_error, lapsed, type_name

__all__ = ["TopicBuffers"]

# The producer's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.stream.producer")

T = TypeVar("T")

#: Seconds close() waits for the linger thread to stop.
JOIN_TIMEOUT = 5.0
#: Longest sleep (s) of an idle linger thread between checks of its stop flag.
IDLE_WAIT = 1.0


class TopicBuffers(Generic[T]):
    """The buffering, flushing and linger machinery of a :class:`StreamProducer`.

    The producer's ``__init__`` sets every attribute declared here.
    """

    producer_id: str
    _aggregator: Callable[[list[T]], T] | None
    _linger: float | None
    _default_store: Store | None
    _stores: dict[str, Store | None]
    _builder: BatchBuilder
    _send: Callable[[str, Outgoing], None]
    _check_topic: Callable[[str], None] | None
    _beats: Heartbeats | None
    _bound: BacklogBound | None
    _topics: dict[str, TopicState]
    _lock: threading.RLock
    _wake: threading.Condition
    _thread: threading.Thread | None
    _stopping: bool
    _closed: bool

    # -- buffering ---------------------------------------------------------------------------

    def _item(self, topic: str, obj: T, evict: bool, metadata: dict[str, Any]) -> Item:
        """``obj`` as a buffered item, serialized now unless an aggregator will combine it.

        Serializing at send makes an object that cannot be serialized fail its own
        ``send``: found at the flush, it would take the objects buffered with it down.
        """
        item = Item(obj, evict, metadata)
        if self._aggregator is not None:
            return item
        try:
            self._builder.encode(item, self._store_for(topic))
        except (SerializationError, TypeError) as exc:
            buffered = len(self._topics[topic].items)
            raise SerializationError(
                f"Cannot send an object of type {type_name(obj)} to topic {topic!r}: "
                f"{str(exc).rstrip('.')}. It was not accepted; the {buffered} object(s) "
                "buffered before it are kept."
            ) from exc
        return item

    def _open_topic(self, topic: str) -> TopicState:
        """The buffer of ``topic``, which must still accept objects."""
        if self._closed:
            raise ClosedError(f"Cannot send to topic {topic!r}: the producer is closed.")
        state = self._topics.get(topic)
        if state is None:
            self._check_new(topic)
            state = self._topics[topic] = TopicState()
        if state.closed:
            raise TopicClosedError(f"Topic {topic!r} has been closed.")
        return state

    def _flush_all(self) -> None:
        with self._lock:
            for topic, state in list(self._topics.items()):
                self._flush_locked(topic, state)

    def _check_new(self, topic: str) -> None:
        """Refuse a topic that could never be published to, before a buffer exists.

        A bad name, or a topic the publisher does not serve, must not stay behind to fail
        every flush.
        """
        check_topic(topic)
        if self._check_topic is not None:
            self._check_topic(topic)

    def _close_topics(self, topics: Iterable[str]) -> None:
        topics = [check_topic(topic) for topic in topics]  # all checked before any closes
        for topic in topics:
            if topic not in self._topics:
                self._check_new(topic)
        with self._lock:
            for topic in topics:
                state = self._topics.setdefault(topic, TopicState())
                state.closed = True
                self._flush_locked(topic, state)

    # -- flushing ----------------------------------------------------------------------------

    def _flush_locked(self, topic: str, state: TopicState) -> None:
        self._publish_pending(topic, state)
        eos = state.closed and not state.ended
        if not state.items and not eos:
            return
        items = self._aggregated(topic, state)
        if not items and not eos:
            return
        if self._bound is not None and items:
            nbytes = sum(approx_size(item.obj) for item in items if item.evict)
            state.backlog.wait_for_room(topic, self._bound, len(items), nbytes)
        try:
            outs = self._builder.build(
                topic, items, store=self._store_for(topic), eos=eos, seq=state.next_seq
            )
        except BackendError as exc:  # storing failed: the items stay buffered
            kept = reworded(exc, f"{exc} {_kept_unstored(topic, len(state.items))}")
            if kept is not exc:
                raise kept from exc
            raise
        state.items, state.since = [], None
        state.next_seq = outs[-1].next_seq
        state.ended = state.ended or eos
        if self._bound is not None:
            for out in outs:
                state.backlog.add(out.stored)
        state.pending += outs
        self._publish_pending(topic, state)

    def _aggregated(self, topic: str, state: TopicState) -> list[Item]:
        """The topic's buffered items, as the aggregator combines them (serialized).

        When the aggregator raises, or its result cannot be serialized, the batch is
        taken out of the buffer and kept in ``state.failed`` for the next call on the
        topic to report: retrying would fail the same way at every later flush, and the
        topic would never publish or close again.
        """
        if self._aggregator is None or not state.items:
            return state.items
        try:
            items = aggregate(self._aggregator, state.items)
            for item in items:
                self._builder.encode(item, self._store_for(topic))
        except Exception as exc:  # noqa: BLE001 - user code; reported by _raise_failed
            state.failed.append(FailedBatch(state.items, exc))
            state.items, state.since = [], None
            return []
        return items

    def _raise_failed(self, topics: Iterable[str] | None, outcome: str) -> None:
        """Raise :class:`AggregationError` for the oldest failed batch not reported yet.

        Each failed batch is reported once, to one caller; the producer stays usable.
        """
        states = self._topics.items() if topics is None else self._states(topics)
        for topic, state in states:
            if state.failed:
                failed = state.failed.pop(0)
                raise aggregation_error(topic, self._aggregator, failed, outcome) from failed.cause

    def _states(self, topics: Iterable[str]) -> list[tuple[str, TopicState]]:
        return [(topic, self._topics[topic]) for topic in topics if topic in self._topics]

    def _store_for(self, topic: str) -> Store | None:
        if topic in self._stores:
            return self._stores[topic]
        return self._default_store

    def _publish_pending(self, topic: str, state: TopicState) -> None:
        while state.pending:
            out = state.pending[0]
            try:
                self._send(topic, out)
            except BaseException as exc:
                state.pending[0] = dataclasses.replace(out, retry=True)
                if isinstance(exc, BackendError):
                    kept = reworded(exc, f"{exc} {_kept(topic, len(state.pending))}")
                    if kept is not exc:
                        raise kept from exc
                raise
            state.pending.pop(0)
            if self._beats is not None:
                self._beats.sent(topic, out.next_seq, out.final)

    # -- linger thread -----------------------------------------------------------------------

    def _start_linger(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._linger_loop, name="fw-stream-linger", daemon=True
            )
            self._thread.start()

    def _linger_loop(self) -> None:
        assert self._linger is not None
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                due = [(s.since, t) for t, s in self._topics.items() if s.since is not None]
                if not due:
                    self._wake.wait(IDLE_WAIT)
                    continue
                since, topic = min(due)
                if now < since + self._linger:
                    self._wake.wait(since + self._linger - now)
                    continue
                self._linger_flush(topic)

    def _linger_flush(self, topic: str) -> None:
        state = self._topics[topic]
        try:
            self._flush_locked(topic, state)
        except Exception:  # isolation boundary: the thread must survive a failed flush
            logger.exception("Linger flush of topic %r failed; retrying after the linger", topic)
            if state.items:
                state.since = time.monotonic()
        if state.failed:  # no caller here: the next call on the topic raises it
            logger.error(
                "The aggregator failed on a batch of %d object(s) of topic %r, which was not "
                "published; the next call on the topic raises AggregationError with them.",
                len(state.failed[-1].items),
                topic,
            )

    def _stop_linger(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(JOIN_TIMEOUT)

    # -- reporting ---------------------------------------------------------------------------

    def _log_failed_but_first(self) -> None:
        """Log every failed batch but the one ``close()`` raises: no later call reports them."""
        failed = [(t, f) for t, s in self._topics.items() for f in s.failed]
        for topic, batch in failed[1:]:
            error = aggregation_error(topic, self._aggregator, batch, "The producer is closed.")
            logger.error("%s", error, exc_info=batch.cause)

    def _raise_lapses(self, topics: Iterable[str] | None, outcome: str) -> None:
        """Raise :class:`HeartbeatLapsedError` for lapses of ``topics`` not reported yet."""
        beats = self._beats
        lapses = [] if beats is None else beats.lapses(topics)
        if beats is not None and lapses:
            raise lapsed(self.producer_id, lapses, beats.patience, outcome)


def _kept_unstored(topic: str, objects: int) -> str:
    """What became of the objects that could not be stored (for the error)."""
    return (
        f"The objects are kept: {objects} object(s) of topic {topic!r} are stored and "
        "published, once, by the next send(), flush() or close() of this producer; do not "
        "send them again."
    )


def _kept(topic: str, messages: int) -> str:
    """What became of the objects whose message failed to publish (for the error)."""
    return (
        f"The objects are kept: {messages} message(s) of topic {topic!r} are resent, once, "
        "by the next send(), flush() or close() of this producer; do not send them again."
    )

"""``StreamProducer``: batch objects per topic, store them, publish small events.

ProxyStore's ``StreamProducer`` API, with these fixes:

* a batch leaves the buffer only once it is stored and built into a message; a
  message that fails to publish stays pending and is resent, with the same
  sequence numbers, by the next flush (consumers drop the duplicate if the first
  attempt did arrive);
* ``close()`` and ``__exit__`` flush; a topic's end-of-stream event is sent once;
* an optional ``linger`` flushes partial batches after a delay (thread ``fw-stream-linger``);
* on pub/sub and durable topics, heartbeats tell consumers the producer is alive
  (thread ``fw-stream-heartbeat``), so a killed producer is reported, not awaited;
  a producer whose process stalled so long that its consumers may have counted it gone
  says so too (``HeartbeatLapsedError``), at its next call on the topic;
* ``send`` is thread-safe;
* inline objects over ``inline_limit`` are spilled to a store automatically.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Generic, Optional, TypeVar, cast

from framework.exceptions import (
    AggregationError,
    BacklogFullError,
    ClosedError,
    HeartbeatLapsedError,
    SerializationError,
    TopicClosedError,
)
from framework.pubsub.protocols import UNSET, Unset
from framework.serialize import Serializer
from framework.store import Store, unregister_store
from framework.stream._backlog import BacklogBound
from framework.stream._building import (
    BatchBuilder,
    FailedBatch,
    Item,
    TopicState,
    aggregate,
    approx_size,
)
from framework.stream._heartbeats import Heartbeats, Lapse
from framework.stream._publishing import (
    beats,
    check_args,
    check_filter,
    check_signed,
    checked_stores,
    default_bound,
    fuser,
    sender,
    watching,
)
from framework.stream._sequencing import SILENT_BEATS
from framework.stream._spill import default_spill_store
from framework.stream.filters import Filter, NullFilter
from framework.stream.protocols import EventPublisher, Publisher

__all__ = ["DEFAULT_OBJECT_TTL", "INLINE_LIMIT", "StreamProducer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Inline objects whose serialized size exceeds this many bytes are spilled to a store.
INLINE_LIMIT = 64 * 1024
#: Default lifetime (s) of stored objects when their store sets none (a safety net).
DEFAULT_OBJECT_TTL = 24 * 3600.0
#: Seconds close() waits for the linger thread to stop.
JOIN_TIMEOUT = 5.0
#: Longest sleep (s) of an idle linger thread between checks of its stop flag.
IDLE_WAIT = 1.0
#: Seconds between heartbeats on a pub/sub topic that has nothing else to publish.
HEARTBEAT = 10.0
#: What a call that raised HeartbeatLapsedError before flushing did.
_NOTHING_FLUSHED = "Nothing was flushed; call it again to go on."
#: What a flush that raised AggregationError did with the other batches.
_OTHERS_FLUSHED = "Every other batch was flushed."


def _lapsed(
    producer: str, lapses: list[Lapse], patience: float, outcome: str
) -> HeartbeatLapsedError:
    """The error reporting ``lapses`` (the first in full, the others by topic)."""
    first = lapses[0]
    others = [lapse.topic for lapse in lapses[1:]]
    also = f" The same holds for topic(s) {', '.join(map(repr, others))}." if others else ""
    return HeartbeatLapsedError(
        f"Producer {producer!r} said nothing on topic {first.topic!r} for {first.silent:.1f} s "
        f"(its process was stopped or starved, and its heartbeats did not go out), while "
        f"consumers count a producer gone after {patience:g} s: they may have stopped "
        f"reading it, and events from sequence {first.next_seq} on may never be read.{also} "
        f"{outcome}",
        topic=first.topic,
        producer=producer,
        expected=first.next_seq,
        silent=first.silent,
        patience=patience,
    )


def _type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _aggregation_error(
    topic: str, aggregator: Any, failed: FailedBatch, outcome: str
) -> AggregationError:
    """The error reporting ``failed``, a batch the aggregator of ``topic`` failed on."""
    name = getattr(aggregator, "__qualname__", None) or repr(aggregator)
    count = len(failed.items)
    return AggregationError(
        f"The aggregator {name} failed on a batch of {count} object(s) of topic {topic!r} "
        f"({type(failed.cause).__name__}: {failed.cause}): the batch was not published and "
        f"is no longer buffered; its objects are this error's .objects. {outcome}",
        topic=topic,
        aggregator=name,
        objects=[item.obj for item in failed.items],
        metadata=[item.metadata for item in failed.items],
    )


class StreamProducer(Generic[T]):
    """Stream producer: buffers objects per topic and publishes them in batches.

    Topics with a :class:`~framework.store.Store` put objects there and publish
    keys; other topics carry objects inline in the event message, spilling those
    over ``inline_limit`` bytes to ``spill_store``.

    Args:
        publisher: A message- or event-level publisher.
        aggregator: Turns each batch into one object; metadata are merged (later
            wins) and ``evict`` is true if any item's was.
        batch_size: Objects per batch (and per published message).
        default_store: Store of topics not named in ``stores``; ``None`` inlines.
        filter_: Called with each object's metadata; True drops the object.
        stores: Store per topic (``None`` = inline for that topic).
        linger: Seconds after which a partial batch is flushed; ``None`` = never.
        inline_limit: Largest serialized inline object, in bytes.
        spill_store: Store for oversized inline objects. By default a Redis store
            on the publisher's connection (when it has one; registered as
            ``fw-spill`` while the producer is open), objects expiring after
            ``spill_ttl``; ``None`` never spills.
        spill_ttl: Lifetime (s) of spilled objects, so unconsumed ones expire.
        ttl: Lifetime (s) of objects put in a store that has no default lifetime of
            its own: a safety net, so objects whose events were lost do not stay in
            Redis forever. ``None`` keeps them until consumed.
        backlog: Bound on each topic's unconsumed stored objects (see
            :class:`~framework.stream.BacklogBound`): at the bound, sending waits for
            consumers, up to its timeout, then raises ``BacklogFullError``. By default
            on for durable publishers (``DEFAULT_BACKLOG_OBJECTS`` objects,
            ``DEFAULT_BACKLOG_BYTES`` bytes, 60 s) and off otherwise; ``None``: off.
        serializer: Serializer of inline objects (default: raw or cloudpickle).
        secret: Sign every message with this shared HMAC key. The default spill
            store signs with it too; a given store must sign its objects (be built
            with a secret), since consumers with the secret refuse unsigned objects.
        producer_id: Unique id put in every batch (default: random).
        heartbeat: On publishers that carry heartbeats (Redis pub/sub): seconds after
            which a topic that has had nothing else to publish gets a batch without
            events, until the topic ends or the producer closes. Consumers that heard
            nothing from a producer for three of them report it as gone (a possible
            loss) and count it as ended, instead of waiting forever for a producer
            that was killed. On durable topics (``RedisStreamPublisher``) a heartbeat
            renews a key that lives three of them instead, and consumers report the
            producer once that key has expired. A producer that was itself silent that
            long (its process stopped or starved) raises ``HeartbeatLapsedError`` at
            its next call on the topic. ``None``: no heartbeats.

    Raises:
        ConfigurationError: If ``batch_size``, ``linger``, ``heartbeat`` or
            ``inline_limit`` is invalid; ``stores`` is not a mapping of topics to
            stores, or ``default_store``/``spill_store`` is not a store; ``filter_`` is
            not callable; or ``secret`` is set and a given store does not sign its
            objects.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        aggregator: Callable[[list[T]], T] | None = None,
        batch_size: int = 1,
        default_store: Store | None = None,
        filter_: Filter | None = None,
        stores: Mapping[str, Store | None] | None = None,
        linger: float | None = None,
        inline_limit: int = INLINE_LIMIT,
        spill_store: Store | Unset | None = UNSET,
        spill_ttl: float = 3600.0,
        serializer: Serializer | None = None,
        secret: bytes | None = None,
        producer_id: str | None = None,
        ttl: float | None = DEFAULT_OBJECT_TTL,
        backlog: BacklogBound | Unset | None = UNSET,
        heartbeat: float | None = HEARTBEAT,
    ) -> None:
        check_args(batch_size, linger, inline_limit, heartbeat)
        check_filter(filter_)
        topic_stores = checked_stores(stores, default_store, spill_store)
        check_signed(secret, [default_store, spill_store, *topic_stores.values()])
        self.publisher = publisher
        self._aggregator, self._batch_size, self._linger = aggregator, batch_size, linger
        self._default_store, self._stores = default_store, topic_stores
        self._filter: Filter = filter_ if filter_ is not None else NullFilter()
        self.producer_id = producer_id or uuid.uuid4().hex
        self._own_spill = isinstance(spill_store, Unset)
        spill = (
            default_spill_store(publisher, spill_ttl, secret) if self._own_spill else spill_store
        )
        beat = heartbeat if heartbeat is not None and beats(publisher) else None
        self._builder = BatchBuilder(
            self.producer_id,
            inline_limit=inline_limit,
            spill_store=cast(Optional[Store], spill),
            serializer=serializer,
            secret=secret,
            inline_objects=isinstance(publisher, EventPublisher),
            fuse=fuser(publisher),
            ttl=ttl,
            beat=beat,
        )
        self._send = sender(publisher, self.producer_id)
        self._beats = (
            None if beat is None else Heartbeats(beat, self._heartbeat, SILENT_BEATS * beat)
        )
        self._watching = watching(publisher) if heartbeat is not None else None
        if self._watching is not None and heartbeat is not None:
            self._watching.watch(self.producer_id, SILENT_BEATS * heartbeat)
            self._beats = Heartbeats(heartbeat, self._keep_alive, SILENT_BEATS * heartbeat)
        self._bound = default_bound(publisher) if isinstance(backlog, Unset) else backlog
        self._topics: dict[str, TopicState] = {}
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)  # wakes the linger thread
        self._thread: threading.Thread | None = None
        self._stopping = self._closed = self._released = False

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        obj: T,
        *,
        evict: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Send an object to the stream: filter, buffer, flush a full batch (thread-safe).

        A partial batch goes by :meth:`flush`, :meth:`close`, ``with`` exit or ``linger``.

        Args:
            topic: Stream topic to send the object to.
            obj: Object to send (``None`` included).
            evict: Delete the stored object once a consumer has consumed it. False
                when several consumers read each object (it then expires by the
                store's or the spill TTL, or must be evicted by hand).
            metadata: JSON-serialisable metadata about the object, used by filters
                on both sides; ``None`` means ``{}``.

        Raises:
            TopicClosedError: If ``topic`` was closed with :meth:`close_topics`.
            ClosedError: If the producer was closed.
            SerializationError: If ``obj`` cannot be serialized (without an
                ``aggregator``, objects are serialized here, as they are sent) or the
                metadata is not JSON-serialisable; ``obj`` was not accepted, and the
                objects sent before it stay buffered.
            BackendError: If flushing a full batch failed (the batch stays buffered).
            AggregationError: If the ``aggregator`` failed on the batch this object
                completed (the error holds the batch's objects, not published), or on
                an earlier batch flushed by ``linger`` (``obj`` was not accepted).
            BacklogFullError: If the topic's backlog stayed at its bound (``backlog``)
                for the whole timeout; ``obj`` was not accepted, send it again later.
            HeartbeatLapsedError: If this producer was silent on ``topic`` so long that
                its consumers may have counted it gone (reported once); ``obj`` was not
                accepted.
        """
        metadata = {} if metadata is None else metadata
        with self._lock:
            state = self._open_topic(topic)
            self._raise_lapses([topic], "The object was not accepted; send it again to go on.")
            self._raise_failed([topic], "The object just sent was not accepted; send it again.")
            if self._filter(metadata):
                return
            self._builder.check_metadata(topic, metadata)
            state.items.append(self._item(topic, obj, evict, metadata))
            if len(state.items) >= self._batch_size:
                try:
                    self._flush_locked(topic, state)
                except BacklogFullError:
                    state.items.pop()
                    raise
                self._raise_failed([topic], "The object just sent was one of them.")
            elif self._linger is not None and state.since is None:
                state.since = time.monotonic()
                self._start_linger()
                self._wake.notify()

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
                f"Cannot send an object of type {_type_name(obj)} to topic {topic!r}: "
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
            state = self._topics[topic] = TopicState()
        if state.closed:
            raise TopicClosedError(f"Topic {topic!r} has been closed.")
        return state

    def flush(self) -> None:
        """Flush the batch buffers (and resend pending messages) of every topic.

        Raises:
            BackendError: If storing or publishing failed; unsent batches stay buffered.
            AggregationError: If the ``aggregator`` failed on a batch (now or in an
                earlier ``linger`` flush); every other batch was published.
            HeartbeatLapsedError: As :meth:`send` (nothing was flushed).
        """
        with self._lock:
            self._raise_lapses(None, _NOTHING_FLUSHED)
            self._flush_all()
            self._raise_failed(None, _OTHERS_FLUSHED)

    def _flush_all(self) -> None:
        with self._lock:
            for topic, state in list(self._topics.items()):
                self._flush_locked(topic, state)

    def flush_topic(self, topic: str) -> None:
        """Flush the batch buffer of one topic.

        This resends the topic's pending messages, applies the aggregator, puts
        the batch in the topic's store (or serializes it inline), builds one event
        batch and publishes it. The buffer is emptied only after the objects are
        stored; a message that fails to publish is kept and resent first next time.

        Args:
            topic: Topic to flush.

        Raises:
            BackendError: If storing or publishing failed.
            AggregationError: As :meth:`flush`.
            HeartbeatLapsedError: As :meth:`send` (nothing was flushed).
        """
        with self._lock:
            self._raise_lapses([topic], _NOTHING_FLUSHED)
            state = self._topics.get(topic)
            if state is not None:
                self._flush_locked(topic, state)
            self._raise_failed([topic], _OTHERS_FLUSHED)

    def close_topics(self, *topics: str) -> None:
        """Flush each topic and send its end-of-stream event, once.

        Consumers raise ``StopIteration`` after every earlier event of the topic.
        Closing a closed topic again sends nothing.

        Args:
            topics: Topics to end.

        Raises:
            BackendError: If publishing failed (the event is resent by the next flush).
            AggregationError: As :meth:`flush`; the topics were ended all the same.
            HeartbeatLapsedError: As :meth:`send` (no topic was ended).
        """
        with self._lock:
            self._raise_lapses(topics, "No topic was ended; call close_topics() again to end them.")
            self._close_topics(topics)
            self._raise_failed(topics, "The topic(s) were ended all the same.")

    def _close_topics(self, topics: Iterable[str]) -> None:
        with self._lock:
            for topic in topics:
                state = self._topics.setdefault(topic, TopicState())
                state.closed = True
                self._flush_locked(topic, state)

    # -- internals ---------------------------------------------------------------------------

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
        outs = self._builder.build(
            topic, items, store=self._store_for(topic), eos=eos, seq=state.next_seq
        )
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
                raise _aggregation_error(topic, self._aggregator, failed, outcome) from failed.cause

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
            except BaseException:
                state.pending[0] = dataclasses.replace(out, retry=True)
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

    def _heartbeat(self, topic: str, next_seq: int, closing: bool) -> None:
        self._send(topic, self._builder.heartbeat(topic, next_seq, closing=closing))

    def _keep_alive(self, topic: str, next_seq: int, closing: bool) -> None:
        assert self._watching is not None
        self._watching.keep_alive(topic, self.producer_id, closing=closing)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(
        self,
        *,
        topics: Iterable[str] = (),
        publisher: bool = True,
        stores: bool = False,
    ) -> None:
        """Close the producer: end ``topics``, flush every buffer, release resources.

        Unlike ProxyStore, buffered objects are flushed, not lost. If the flush fails,
        the error is raised and nothing is released: calling ``close()`` again
        publishes what is left (or raises again). Once it succeeded, calling it again
        does nothing. No object is accepted after the first call.

        Args:
            topics: Topics to end first (as :meth:`close_topics`).
            publisher: Close the publisher.
            stores: Close and unregister the stores given to the producer.

        Raises:
            BackendError: If the final flush failed (retry by calling ``close()`` again).
            AggregationError: If the ``aggregator`` failed on a batch that was not reported
                yet (further ones are logged); the producer is closed all the same.
            HeartbeatLapsedError: If this producer was silent on a topic so long that its
                consumers may have counted it gone, and that was not reported yet; the
                producer is closed nonetheless.
        """
        with self._lock:
            if self._released:
                return
            self._closed = True
        self._stop_linger()
        self._close_topics(list(topics))
        self._flush_all()
        with self._lock:
            if self._released:
                return
            self._released = True
        self._release(publisher=publisher, stores=stores)
        self._log_failed_but_first()
        self._raise_failed(None, "The producer is closed all the same.")
        self._raise_lapses(None, "The producer is closed all the same.")

    def _log_failed_but_first(self) -> None:
        """Log every failed batch but the one ``close()`` raises: no later call reports them."""
        failed = [(t, f) for t, s in self._topics.items() for f in s.failed]
        for topic, batch in failed[1:]:
            error = _aggregation_error(topic, self._aggregator, batch, "The producer is closed.")
            logger.error("%s", error, exc_info=batch.cause)

    def _raise_lapses(self, topics: Iterable[str] | None, outcome: str) -> None:
        """Raise :class:`HeartbeatLapsedError` for lapses of ``topics`` not reported yet."""
        beats = self._beats
        lapses = [] if beats is None else beats.lapses(topics)
        if beats is not None and lapses:
            raise _lapsed(self.producer_id, lapses, beats.patience, outcome)

    def _release(self, *, publisher: bool, stores: bool) -> None:
        if self._beats is not None:
            self._beats.close()  # before the publisher: it says goodbye through it
        spill = self._builder.spill_store
        if spill is not None and self._own_spill:
            # Unregistered, not closed: a consumer in this process may still read from it
            # (it holds no resources of its own; the connection is the publisher's).
            unregister_store(spill)
        if stores:
            known = {id(s): s for s in (self._default_store, *self._stores.values()) if s}
            for store in known.values():
                store.close()
                unregister_store(store)
        if publisher:
            self.publisher.close()

    def __enter__(self) -> StreamProducer[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

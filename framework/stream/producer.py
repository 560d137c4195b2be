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

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Optional, TypeVar, cast

from framework.exceptions import BacklogFullError, ConfigurationError
from framework.pubsub.protocols import UNSET, Unset
from framework.serialize import Serializer
from framework.store import Store, unregister_store
from framework.stream._backlog import BacklogBound
from framework.stream._batches import TopicState
from framework.stream._building import BatchBuilder
from framework.stream._heartbeats import Heartbeats
from framework.stream._publishing import (
    beats,
    check_args,
    check_filter,
    check_publisher,
    check_signed,
    checked_stores,
    default_bound,
    fuser,
    sender,
    sign_records,
    topic_check,
    watching,
)
from framework.stream._sequencing import SILENT_BEATS
from framework.stream._spill import default_spill_store
from framework.stream._topic_buffers import TopicBuffers
from framework.stream.filters import Filter, NullFilter
from framework.stream.protocols import EventPublisher, Publisher

__all__ = ["DEFAULT_OBJECT_TTL", "INLINE_LIMIT", "StreamProducer"]

T = TypeVar("T")

#: Inline objects whose serialized size exceeds this many bytes are spilled to a store.
INLINE_LIMIT = 64 * 1024
#: Default lifetime (s) of stored objects when their store sets none (a safety net).
DEFAULT_OBJECT_TTL = 24 * 3600.0
#: Seconds between heartbeats on a pub/sub topic that has nothing else to publish.
HEARTBEAT = 10.0
#: What a call that raised HeartbeatLapsedError before flushing did.
_NOTHING_FLUSHED = "Nothing was flushed; call it again to go on."
#: What a flush that raised AggregationError did with the other batches.
_OTHERS_FLUSHED = "Every other batch was flushed."


class StreamProducer(TopicBuffers[T]):
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
            Durable and list publishers sign the producer's records in a topic's
            producers hash with it too (``sign_records``).
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
        check_publisher(publisher)
        check_filter(filter_)
        topic_stores = checked_stores(stores, default_store, spill_store)
        check_signed(secret, [default_store, spill_store, *topic_stores.values()])
        self.publisher = publisher
        self._aggregator, self._batch_size, self._linger = aggregator, batch_size, linger
        self._default_store, self._stores = default_store, topic_stores
        self._filter: Filter = filter_ if filter_ is not None else NullFilter()
        self.producer_id = producer_id or uuid.uuid4().hex
        sign_records(publisher, self.producer_id, secret)
        self._watching = watching(publisher) if heartbeat is not None else None
        if self._watching is not None and heartbeat is not None:
            # Checks the id too: before anything is built that would need closing.
            self._watching.watch(self.producer_id, SILENT_BEATS * heartbeat)
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
        self._check_topic = topic_check(publisher)
        self._beats = (
            None if beat is None else Heartbeats(beat, self._heartbeat, SILENT_BEATS * beat)
        )
        if self._watching is not None and heartbeat is not None:
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
            ConfigurationError: If ``topic`` is not a non-empty string without ``{`` or
                ``}``, the publisher serves no such topic (a ``QueuePublisher`` without
                a queue for it), or ``evict`` is not a bool; nothing was buffered for it.
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
        if not isinstance(evict, bool):
            raise ConfigurationError(f"evict must be True or False, got {evict!r:.80}.")
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
            ConfigurationError: If a topic is not a valid name or the publisher serves
                no such topic (no topic was ended).
            BackendError: If publishing failed (the event is resent by the next flush).
            AggregationError: As :meth:`flush`; the topics were ended all the same.
            HeartbeatLapsedError: As :meth:`send` (no topic was ended).
        """
        for topic in topics:
            if isinstance(topic, list | tuple | set | frozenset):
                raise ConfigurationError(
                    "close_topics() takes topic names as separate arguments, "
                    f"close_topics('a', 'b'), not a {type(topic).__name__}: {topic!r:.80}."
                )
        with self._lock:
            self._raise_lapses(topics, "No topic was ended; call close_topics() again to end them.")
            self._close_topics(topics)
            self._raise_failed(topics, "The topic(s) were ended all the same.")

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
        if isinstance(topics, str):  # it would end one topic per character
            raise ConfigurationError(
                f"close(topics=...) takes a list of topic names, not the str {topics!r:.80}: "
                f"close(topics=[{topics!r:.80}])."
            )
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

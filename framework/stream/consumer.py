"""``StreamConsumer``: iterate over the objects of one or more topics.

ProxyStore's ``StreamConsumer`` API, with these fixes:

* loss is never silent: sequence gaps, late starts and interrupted subscriptions
  are reported as :class:`~framework.exceptions.MessageLossError` (``on_loss``)
  naming the producer and the lost range, "lost" or "possibly lost"; duplicates
  (a producer's resend) are dropped, a restarted producer (new epoch) is not;
* a topic ends once every producer seen on it has ended (a subscriber of competing
  consumers, a list's or a group's, also confirms that producers it never heard from
  ended), and a consumer of several topics once every topic has; after an
  interruption it never waits forever
  for an end that may have been lost (``loss_grace``), nor for a producer that
  promised heartbeats and fell silent for three of them (killed, or cut off);
* an item counts as consumed only once it reached the caller: a failed fetch
  leaves it queued (and, on a durable topic, pending) for the next call;
* ``next_object`` returns a stored ``None`` (stores tell ``None`` from missing) and
  fetches the rest of a batch in one round trip;
* waits may time out (:class:`~framework.exceptions.ReceiveTimeout`);
* with a durable (acknowledging) subscriber, a message is acknowledged once its
  last item has been handed over and the caller comes back for the next one (so
  an item being processed when the consumer dies is delivered again), and
  evictions wait for that acknowledgement: a consumer that dies mid-batch leaves
  every object in place for the group member that takes its messages over. An
  evicting proxy it handed out evicts its object once it has resolved here *and* its
  message was acknowledged, in either order (:mod:`framework.stream._late`).

Reading messages into the queue is :mod:`framework.stream._receiving`.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

from framework.exceptions import BackendError, FrameworkError, MessageLossError
from framework.proxy import Proxy, resolve
from framework.pubsub.protocols import AckingSubscriber, PollingSubscriber
from framework.store import Store, unregister_store
from framework.store.base import Unreadable
from framework.store.factory import StoreFactory
from framework.stream._late import LateEvictions
from framework.stream._publishing import check_filter
from framework.stream._reading import (
    Entry,
    LossPolicy,
    check_args,
    described,
    fetch_run,
    handing,
    key_proxy,
    report_loss,
    resolve_inline,
    select_run,
    store_for,
    until_stop,
    warn_pickle_trust,
)
from framework.stream._receiving import QueuedError, Receiving
from framework.stream._returning import unhanded_messages
from framework.stream._sequencing import Sequencer
from framework.stream.events import EventBatch, NewObjectEvent
from framework.stream.filters import Filter, NullFilter
from framework.stream.protocols import EventSubscriber, Subscriber

__all__ = ["LOSS_GRACE", "LossPolicy", "StreamConsumer"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Most objects fetched in one round trip.
MAX_WINDOW = 1024
#: Objects at least this large (bytes, on average) are fetched one per round trip: the
#: round trip is then a small share of the transfer, and several large replies in one
#: read cost more than one each (1 MB objects: ~25% faster one by one, 1.2x-1.3x the
#: plain redis-py loop instead of 0.7x-0.8x in ``python -m benchmarks stream``).
SINGLE_FETCH = 512 * 1024
#: Default seconds an interrupted consumer waits for a producer to show what was lost.
LOSS_GRACE = 30.0


class StreamConsumer(Receiving, Generic[T]):
    """Stream consumer: an iterator over the objects of a stream.

    ``next()`` yields a lazy :class:`~framework.store.Proxy` for objects kept in
    a store and the object itself for inline ones; ``next_object()`` always
    yields the object. Each raises ``StopIteration`` once every topic has ended.

    Args:
        subscriber: A message- or event-level subscriber.
        filter_: Called with each object's metadata; True drops the object (and
            evicts its stored copy when the producer set ``evict``).
        timeout: Longest wait (s) of each ``next*`` call; ``None`` waits forever.
            Needs a subscriber that accepts ``timeout=`` (all framework ones do).
        on_loss: ``"raise"`` (default) raises MessageLossError from ``next*``;
            ``"warn"`` emits a RuntimeWarning; a callable receives the error.
            Either way the stream carries on after the loss.
        secret: Verify every message's HMAC with this shared key first, and read
            objects only from stores that sign them: unsigned data is refused
            (``MissingSignatureError``) before any deserializer runs. A durable or
            list subscriber is told to trust only producer records signed with it
            (``verify_records``): a topic never ends on a forged one. Without a
            secret, pickled data from Redis is trusted (a warning says so once per
            process): anyone who can write to Redis can then run code here.
        allow_pickle: Accept objects that need unpickling. False refuses every
            pickled object (``DeserializationError`` naming the topic and key, or on
            resolving a proxy), inline or stored, whatever the serializer of the store
            the message names.
        prefetch_bytes: Rough memory budget for the objects ``next_object``
            fetches ahead from one batch (objects of ``SINGLE_FETCH`` bytes or more
            are fetched one at a time).
        loss_grace: After an interrupted subscription, each producer's next batch
            shows whether events were lost; a producer silent for this long (s) is
            reported as possibly lost (its end-of-stream may have been among the
            lost events) and counts as ended, so the consumer never waits forever.
            A producer that sends heartbeats (on pub/sub, see ``StreamProducer``'s
            ``heartbeat``) and stays silent for three of them while the subscription
            is up is reported and counted as ended the same way.

    Raises:
        ConfigurationError: If ``on_loss`` or ``timeout`` is invalid, or ``secret`` is
            given with an event-level subscriber (it deserializes unverified).
    """

    def __init__(
        self,
        subscriber: Subscriber,
        *,
        filter_: Filter | None = None,
        timeout: float | None = None,
        on_loss: LossPolicy = "raise",
        secret: bytes | None = None,
        allow_pickle: bool = True,
        prefetch_bytes: int = 4 * 1024 * 1024,
        loss_grace: float = LOSS_GRACE,
    ) -> None:
        self._events = isinstance(subscriber, EventSubscriber)
        check_args(subscriber, on_loss, timeout, secret=secret, events=self._events)
        check_filter(filter_)
        if secret is None and allow_pickle:
            warn_pickle_trust()
        self.subscriber = subscriber
        self._filter: Filter = filter_ if filter_ is not None else NullFilter()
        self._timeout = timeout
        self._on_loss = on_loss
        self._secret = secret
        self._allow_pickle = allow_pickle
        self._prefetch_bytes = prefetch_bytes
        self._acking = isinstance(subscriber, AckingSubscriber) and bool(subscriber.acks)
        self._topic_ended = getattr(subscriber, "topic_ended", None)
        verify_records = getattr(subscriber, "verify_records", None)
        if secret is not None and callable(verify_records):
            # A group's or a list's producers hash ends its topics: with the secret, a
            # record forged there ends nothing.
            verify_records(secret)
        group = getattr(subscriber, "group", None)
        #: Why a group member may find an object gone: another member took its entry.
        self._missing_hint = (
            f"In consumer group {group!r}, another member may have claimed this entry "
            "after it stayed pending here for claim_idle, and consumed and evicted the object."
            if self._acking and isinstance(group, str)
            else ""
        )
        #: A subscriber of competing consumers that takes back, when this consumer closes,
        #: the events it took but did not hand over (a list topic's): see close().
        self._put_back: Callable[[list[bytes]], None] | None = (
            getattr(subscriber, "put_back", None) if not self._acking else None
        )
        # Durable topics evict an object only once it reached the caller: a destructive
        # read whose reply is lost (a connection cut) would lose the object for good.
        # Objects of events that may be given back are not evicted before they are
        # handed over either.
        self._evict_late = (
            self._acking
            or getattr(subscriber, "durable", False) is True
            or self._put_back is not None
        )
        self._topics, complete = described(subscriber)
        self._sequencer = Sequencer(complete=complete)
        self._queue: deque[Entry | MessageLossError | QueuedError] = deque()
        self._stores: dict[bytes, Store] = {}
        self._deferred: list[tuple[Store, str]] = []
        self._seen: set[str] = set()
        self._loss_grace = loss_grace
        self._exhausted = False
        self._ack_due = False
        self._late = LateEvictions()
        self._window = 1
        self._closed = False
        # An acknowledging subscriber acknowledges its latest message: read one at a time.
        self._drain: Callable[[], bytes | None] | None = None
        # Competing consumers take one message at a time: what one drained ahead, the
        # others could not have, and a killed process would lose it.
        if isinstance(subscriber, PollingSubscriber) and not self._acking and not self._put_back:
            # Draining what the last read brought saves a read that finds nothing.
            self._drain = getattr(subscriber, "buffered_message", subscriber.poll_message)

    # -- the seed API ----------------------------------------------------------------------

    def __iter__(self) -> StreamConsumer[T]:
        """Return an iterator over items (as :meth:`next` returns them)."""
        return self

    def __next__(self) -> Any:
        """Alias for :meth:`next`."""
        return self.next()

    def next(self) -> Any:
        """Get the next item: a proxy of a stored object, or an inline object itself.

        An object of a topic without a store is handed over itself, also one too big to
        ride inline (it went to the spill store and is fetched here).

        Raises:
            StopIteration: Once every topic has ended (this does not close the consumer).
            ReceiveTimeout: If nothing arrived within ``timeout``.
            MessageLossError: If events were lost and ``on_loss`` is ``"raise"``.
        """
        return self.next_with_metadata()[1]

    def next_with_metadata(self) -> tuple[dict[str, Any], Any]:
        """Get the next item with its metadata (see :meth:`next`).

        Returns:
            The producer's metadata and the proxy or inline object.

        Raises:
            StopIteration: Once every topic has ended.
            ReceiveTimeout: If nothing arrived within ``timeout``.
            MessageLossError: If events were lost and ``on_loss`` is ``"raise"``.
        """
        entry = self._take()
        with self._handing(entry):
            if isinstance(entry.event, NewObjectEvent):
                value = resolve_inline(entry, self._allow_pickle)
            elif entry.event.spilled:  # inline for the producer: the object itself
                value = self._fetched(entry)
            elif entry.fetched:
                # Fetched ahead by an earlier next_object() (a batch is read at once, and
                # with evict taken out of the store): a proxy all the same, resolved.
                target = entry.result(self._hint_for(entry))
                key, evict = entry.event.key, entry.event.evict
                factory = StoreFactory.with_target(
                    key,
                    self._store(entry.batch),
                    target,
                    evict=evict,
                    allow_pickle=self._allow_pickle,
                )
                value = Proxy(factory)
                resolve(value)
            else:
                store = self._store(entry.batch)
                key, pickles = entry.event.key, self._allow_pickle
                if self._acking and entry.event.evict:
                    # Evicted once resolved here and acknowledged, not before the ack.
                    value = self._late.proxy(store, key, allow_pickle=pickles)
                else:
                    value = key_proxy(store, key, evict=entry.event.evict, allow_pickle=pickles)
        return entry.event.metadata, value

    def next_object(self) -> T:
        """Get the next object itself (fetched, and evicted if flagged).

        Raises:
            StopIteration: Once every topic has ended.
            ReceiveTimeout: If nothing arrived within ``timeout``.
            MessageLossError: If events were lost and ``on_loss`` is ``"raise"``.
            ObjectNotFoundError: If the object is no longer in its store.
        """
        return self.next_object_with_metadata()[1]

    def next_object_with_metadata(self) -> tuple[dict[str, Any], T]:
        """Get the next object with its metadata (see :meth:`next_object`).

        Returns:
            The producer's metadata and the object (``None`` if ``None`` was sent).

        Raises:
            StopIteration: Once every topic has ended.
            ReceiveTimeout: If nothing arrived within ``timeout``.
            MessageLossError: If events were lost and ``on_loss`` is ``"raise"``.
            ObjectNotFoundError: If the object is no longer in its store.
        """
        entry = self._take()
        with self._handing(entry):
            if isinstance(entry.event, NewObjectEvent):
                value = resolve_inline(entry, self._allow_pickle)
            else:
                value = self._fetched(entry)
        return entry.event.metadata, cast(T, value)

    def _fetched(self, entry: Entry) -> Any:
        """The stored object of ``entry``, fetched (with its batch's) unless it was already.

        Raises:
            ObjectNotFoundError: If the object is no longer in its store.
        """
        if not entry.fetched:
            self._prefetch(entry)
        return entry.result(self._hint_for(entry))

    def _hint_for(self, entry: Entry) -> str:
        """What may explain ``entry``'s object missing: its store's reason, then the group's."""
        store_hint = self._store(entry.batch)._missing_hint()
        emptied = (
            "Redis lost the topic's stream since this consumer started (restarted without "
            "persistence, or expired; reported as a possible loss), maybe with the object."
            if getattr(self.subscriber, "emptied", False)
            else ""
        )
        hints = (store_hint, emptied, self._missing_hint)
        return " ".join(hint for hint in hints if hint)

    def iter_with_metadata(self) -> Generator[tuple[dict[str, Any], Any], None, None]:
        """Yield ``(metadata, item)`` tuples until the stream ends (see :meth:`next`)."""
        return until_stop(self.next_with_metadata)

    def iter_objects(self) -> Generator[T, None, None]:
        """Yield objects until the stream ends (see :meth:`next_object`)."""
        return until_stop(self.next_object)

    def iter_objects_with_metadata(self) -> Generator[tuple[dict[str, Any], T], None, None]:
        """Yield ``(metadata, object)`` tuples until the stream ends."""
        return until_stop(self.next_object_with_metadata)

    def close(self, *, stores: bool = False, subscriber: bool = True) -> None:
        """Close the consumer (idempotent).

        With a durable group subscriber, a message whose last item was handed over
        but not followed by another ``next*`` call stays unacknowledged, so another
        member processes it again (at-least-once).

        On a list topic (competing consumers), the events this consumer took but did not
        hand over go back to the head of the topic's list, for the other consumers.

        Args:
            stores: Close and unregister the stores this consumer used.
            subscriber: Close the subscriber.
        """
        if self._closed:
            return
        self._closed = True
        if self._put_back is not None:
            self._give_back(self._put_back)
        if not self._acking and (self._ack_due or self._deferred):
            self._ack(evict=True)  # nothing to acknowledge: just run the pending evictions
        if stores:
            for store in self._stores.values():
                store.close()
                unregister_store(store)
        if subscriber:
            self.subscriber.close()

    def _give_back(self, put_back: Callable[[list[bytes]], None]) -> None:
        """Hand the events not handed over back to the subscriber; keep their objects."""
        returned = unhanded_messages(self._queue, self._secret)
        if not returned:
            return
        kept = {key for _, keys in returned for key in keys}
        self._deferred = [pair for pair in self._deferred if pair[1] not in kept]
        try:
            put_back([message for message, _ in returned])
        except FrameworkError as exc:
            logger.error(
                "%d event(s) taken from %s but not handed over could not be put back, and "
                "are lost for the other consumers: %s",
                sum(isinstance(item, Entry) for item in self._queue),
                self._where(),
                exc,
            )
            return
        self._queue.clear()

    def __enter__(self) -> StreamConsumer[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- handing over ------------------------------------------------------------------------

    def _handing(self, entry: Entry) -> contextlib.AbstractContextManager[None]:
        return handing(entry, self._queue, self._handed)

    def _handed(self, entry: Entry) -> None:
        self._ack_due = self._ack_due or entry.ack

    def _ack(self, *, evict: bool = False) -> None:
        """Acknowledge the current message; run the deferred evictions once the queue is empty.

        Evictions wait until every queued entry was handed over (and its message acked),
        then go in one ``UNLINK`` per store: one round trip per read, not per object.
        """
        if self._acking:
            cast(AckingSubscriber, self.subscriber).ack_message()
            self._late.acknowledged()
        while self._deferred and (evict or not self._queue):
            store = self._deferred[0][0]
            keys = [key for owner, key in self._deferred if owner is store]
            try:
                store.evict_batch(keys)
            except BackendError as exc:
                # The objects reached the caller already: a Redis outage must not fail the
                # reads that follow. They stay deferred, evicted by a later call (and expire
                # by their TTL should the consumer close first).
                logger.warning(
                    "Could not evict %d consumed object(s) from store %r yet: %s",
                    len(keys),
                    store.name,
                    exc,
                )
                return
            self._deferred = [pair for pair in self._deferred if pair[0] is not store]

    def _report(self, loss: MessageLossError) -> None:
        report_loss(loss, self._on_loss)

    def _store(self, batch: EventBatch) -> Store:
        return store_for(batch, self._stores, signed=self._secret is not None)

    def _prefetch(self, entry: Entry) -> None:
        """Fetch ``entry`` and the next queued objects of its store in one round trip."""
        store = self._store(entry.batch)
        run = select_run(entry, self._queue, self._window, lambda b: self._store(b) is store)
        evicting = not self._evict_late  # durable: evict once handed over (and acked)
        average = fetch_run(store, run, evict=evicting, allow_pickle=self._allow_pickle)
        if not evicting:
            # A value that cannot be read is left in the store, for someone to inspect.
            self._deferred += [
                (store, e.event.key)  # type: ignore[union-attr]
                for e in run
                if e.event.evict and not isinstance(e.value, Unreadable)  # type: ignore[union-attr]
            ]
        if average >= SINGLE_FETCH:
            self._window = 1
        else:
            self._window = max(1, min(MAX_WINDOW, self._prefetch_bytes // max(average, 1)))

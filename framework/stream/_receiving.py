"""How a stream consumer fills its queue: read, verify, sequence, queue (no Redis code).

:class:`~framework.stream.StreamConsumer` keeps its public methods, the handing-over of
entries and their acknowledgement in :mod:`framework.stream.consumer`; this mixin is
what runs when its queue is empty. It reads one message (and drains the ones already
waiting, so their objects are fetched together), refuses what cannot be read or was
copied from another topic, and lets the sequencer drop duplicates and find gaps. A loss
is queued where it happened, so the caller hears of it only after every item before it;
so is a message that cannot be read.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from framework._core_errors import reworded
from framework.exceptions import (
    BackendError,
    BackendUnavailable,
    FrameworkError,
    MessageLossError,
    ReceiveTimeout,
    SecurityError,
)
from framework.store import Store
from framework.stream._reading import Entry
from framework.stream._sequencing import ALWAYS, Sequencer
from framework.stream.events import (
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    check_origin,
    decode_message,
)
from framework.stream.filters import Filter
from framework.stream.protocols import EventSubscriber, Subscriber

__all__ = ["Receiving"]

# The consumer's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.stream.consumer")

#: Most items queued by draining the messages that are already waiting.
DRAIN_LIMIT = 1024


class QueuedError:
    """An error queued where it happened, raised when its turn comes.

    A message that cannot be read, or a filter that raised on one event: the items
    before it are handed over first, and those after it still are.
    """

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class Receiving:
    """Reading messages into the queue of a :class:`StreamConsumer`.

    The consumer's ``__init__`` sets every attribute declared here.
    """

    subscriber: Subscriber
    _events: bool
    _filter: Filter
    _timeout: float | None
    _secret: bytes | None
    _acking: bool
    _topics: frozenset[str]
    _sequencer: Sequencer
    _queue: deque[Entry | MessageLossError | QueuedError]
    _deferred: list[tuple[Store, str]]
    _seen: set[str]
    _loss_grace: float
    _exhausted: bool
    _ack_due: bool
    _drain: Callable[[], bytes | None] | None
    #: A subscriber of competing consumers that tells whether its topic ended, if any.
    _topic_ended: Callable[[], bool] | None

    if TYPE_CHECKING:  # provided by StreamConsumer

        def _ack(self, *, evict: bool = False) -> None: ...

        def _report(self, loss: MessageLossError) -> None: ...

        def _store(self, batch: EventBatch) -> Store: ...

    @property
    def _finished(self) -> bool:
        """Whether every topic has ended (topics are the subscriber's, else those seen).

        In a consumer group the end-of-stream event reaches one member, possibly before
        other members' pending messages are done: there the subscriber ends each member
        once the group has drained, so the events are only hints.
        """
        if self._exhausted:
            return True
        target = self._topics or self._seen
        ended = self._sequencer.ended
        if self._acking or not target or not all(ended(t) for t in target):
            return False
        return self._topic_ended is None or self._confirmed_end(self._topic_ended)

    def _confirmed_end(self, topic_ended: Callable[[], bool]) -> bool:
        """Ask a subscriber of competing consumers whether the whole topic is done.

        Producers this consumer has not heard from may still be publishing: their
        messages, their end included, went to the other consumers.
        """
        try:
            return topic_ended()
        except BackendError as exc:
            logger.info("Could not tell whether the topic ended (%s); reading on.", exc)
            return False

    def _take(self) -> Entry:
        if self._ack_due:  # the caller is back for more: it is done with the last message
            self._ack()  # if this fails, the next call acknowledges again
            self._ack_due = False
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            while not self._queue:
                if self._finished:
                    raise StopIteration
                self._receive(deadline)
            item = self._queue.popleft()
            if isinstance(item, Entry):
                return item
            if isinstance(item, QueuedError):
                raise item.error
            self._report(item)  # a loss, reported where it happened in the stream

    def _receive(self, deadline: float | None) -> None:
        """Wait for one message, then queue it and whatever else is already waiting."""
        due = self._sequencer.next_check(self._loss_grace, self._listening())
        try:
            self._accept(
                *self._read(due if deadline is None or (due and due < deadline) else deadline)
            )
            # Queue messages already here: their objects are then fetched together.
            while self._drain is not None and len(self._queue) < DRAIN_LIMIT:
                data = self._drained()
                if data is None:
                    return
                try:
                    decoded = self._decode(data)
                except FrameworkError as exc:  # after the items of the messages before it
                    self._queue.append(QueuedError(exc))
                    continue
                self._accept(*decoded)
        except StopIteration:
            self._exhausted = True
        except MessageLossError as err:  # the subscription was interrupted
            self._interrupted(err)
        except ReceiveTimeout:
            if due is None or time.monotonic() < due:
                raise
            overdue = self._sequencer.overdue(time.monotonic(), self._loss_grace, self._listening())
            self._queue.extend(overdue)

    def _drained(self) -> bytes | None:
        """The next message if one is already waiting, else None.

        Draining only saves reads: a dropped connection ends it, and the next blocking
        read, which rides such drops out, takes over.
        """
        assert self._drain is not None
        try:
            return self._drain()
        except BackendUnavailable as exc:
            logger.info("Stopped draining topic messages (%s); reading on.", exc)
            return None

    def _listening(self) -> float | None:
        """Since when the subscription has been up; None while it is down (reconnecting)."""
        since: float | None = getattr(self.subscriber, "listening_since", ALWAYS)
        return since

    def _interrupted(self, err: MessageLossError) -> None:
        """An interrupted subscription: check the producers' next numbers, or report it.

        A producer the subscriber found gone counts as ended.
        """
        if err.gone and err.producer is not None:
            self._sequencer.stop(err.topic, err.producer)
        if err.possible and err.producer is None and self._sequencer.complete:
            logger.warning("%s Checking each producer's sequence numbers.", err)
            self._sequencer.interrupt(time.monotonic())
        else:
            self._queue.append(err)

    def _read(self, deadline: float | None) -> tuple[EventBatch, list[memoryview]]:
        kwargs: dict[str, Any] = {}
        if deadline is not None:
            kwargs["timeout"] = max(0.0, deadline - time.monotonic())
        if self._events:
            return cast(EventSubscriber, self.subscriber).next_events(**kwargs), []
        return self._decode(self.subscriber.next_message(**kwargs))  # type: ignore[union-attr]

    def _decode(self, data: bytes) -> tuple[EventBatch, list[memoryview]]:
        try:
            batch, parts = decode_message(data, secret=self._secret)
            check_origin(batch)
            self._check_topic(batch)
        except FrameworkError as exc:
            self._ack()  # a message that cannot be read would otherwise come back forever
            raise self._named(exc) from exc
        return batch, parts

    def _named(self, error: FrameworkError) -> FrameworkError:
        """``error`` of a message that cannot be read, naming where it came from."""
        return reworded(error, f"A message of {self._where()} cannot be read: {error}")

    def _where(self) -> str:
        """The subscription's topics, for messages."""
        topics = sorted(self._topics)
        if not topics:
            return "this subscription"
        return f"topic {topics[0]!r}" if len(topics) == 1 else f"topics {topics}"

    def _check_topic(self, batch: EventBatch) -> None:
        """With a secret, a batch signed for another topic was copied here: refuse it."""
        if self._secret is not None and self._topics and batch.topic not in self._topics:
            raise SecurityError(
                f"A signed batch of topic {batch.topic!r} (producer {batch.producer!r}, "
                f"first event {batch.seq}) arrived on a subscription to "
                f"{sorted(self._topics)}: it was copied from another topic and is refused."
            )

    def _accept(self, batch: EventBatch, parts: list[memoryview]) -> None:
        topic = batch.topic
        self._seen.add(topic)
        events, loss = self._sequencer.admit(batch)
        if loss is not None:
            self._queue.append(loss)  # reported once the items before the gap are out
        entries: list[Entry] = []
        items: list[Entry | QueuedError] = []
        for event in events:
            if isinstance(event, EndOfStreamEvent):
                continue  # the sequencer counts the producer as ended
            try:
                dropped = self._filter(event.metadata)
            except Exception as exc:  # noqa: BLE001 - the caller's, raised in its turn
                # Raised in this event's place: the batch's other events are not lost.
                items.append(QueuedError(exc))
                continue
            if dropped:
                if not isinstance(event, NewObjectEvent) and event.evict:
                    self._deferred.append((self._store(batch), event.key))
            else:
                entries.append(Entry(event, batch, parts))
                items.append(entries[-1])
        if entries:
            entries[-1].ack = True
        self._queue.extend(items)
        if not entries:
            self._ack()

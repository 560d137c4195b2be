"""Event-level publisher and subscriber protocols, and the Publisher/Subscriber unions.

Event-level shims exchange :class:`~framework.stream.events.EventBatch` objects and
do their own serialization (ProxyStore's ``EventPublisher``/``EventSubscriber``);
message-level shims (:mod:`framework.pubsub`) exchange bytes, which the stream
layer encodes and decodes. They live here, not in :mod:`framework.pubsub`, because
they name events: the pub/sub layer never imports the stream layer.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

from framework.pubsub.protocols import MessagePublisher, MessageSubscriber
from framework.stream.events import EventBatch

__all__ = ["EventPublisher", "EventSubscriber", "Filter", "Publisher", "Subscriber"]


@runtime_checkable
class EventPublisher(Protocol):
    """Publisher interface to an event stream."""

    def close(self) -> None:
        """Close this publisher (idempotent)."""
        ...

    def send_events(self, events: EventBatch) -> None:
        """Publish a batch of events to the stream.

        Args:
            events: Batch of events to publish; inline objects are in ``event.obj``.
        """
        ...


@runtime_checkable
class EventSubscriber(Protocol):
    """Subscriber interface to an event stream.

    Iterating yields batches until the subscription ends (``StopIteration``).
    """

    def __iter__(self) -> EventSubscriber: ...

    def __next__(self) -> EventBatch: ...

    def close(self) -> None:
        """Close this subscriber (idempotent)."""
        ...

    def next_events(self) -> EventBatch:
        """Get the next batch of events.

        Raises:
            StopIteration: When the subscription has ended or was closed.
        """
        ...


class Filter(Protocol):
    """A stream filter (ProxyStore's protocol): True drops the object with this metadata."""

    def __call__(self, metadata: dict[str, Any]) -> bool:
        """Whether to drop the object whose event carries ``metadata``."""
        ...


#: Anything a :class:`~framework.stream.StreamProducer` can publish through.
Publisher = Union[EventPublisher, MessagePublisher]
#: Anything a :class:`~framework.stream.StreamConsumer` can read from.
Subscriber = Union[EventSubscriber, MessageSubscriber]

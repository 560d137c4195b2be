"""Message-level publisher and subscriber protocols, plus optional capabilities.

The two core protocols are ProxyStore's (``proxystore.stream.protocols``): a
publisher sends opaque messages to a topic, a subscriber yields them. Any object
with these methods works with :class:`framework.stream.StreamProducer` and
:class:`framework.stream.StreamConsumer`; nothing needs to inherit from them.

Optional capabilities each get their own small protocol, checked with
``isinstance`` by the stream layer (like ProxyStore's ``DeferrableConnector``):

* :class:`SegmentsPublisher`: accepts a multi-part :class:`~framework.buffers.Segments`
  message without joining it (zero-copy for inline payloads).
* :class:`AtomicPublisher`: runs a batch's store writes and publishes the message
  that names them as one step, publishing nothing if a write failed.
* :class:`AckingSubscriber`: messages stay pending until acknowledged (durable topics).
* :class:`PollingSubscriber`: returns a message only if one is already waiting, so a
  consumer can take several at once and fetch their objects in one round trip.
* :class:`DescribedSubscriber`: tells the consumer which topics it listens to and
  whether it sees every event of them in order (so a sequence gap means loss).

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, Literal, Protocol, runtime_checkable

from framework.buffers import Segments

__all__ = [
    "UNSET",
    "AckingSubscriber",
    "AtomicPublisher",
    "DescribedSubscriber",
    "MessagePublisher",
    "MessageSubscriber",
    "PollingSubscriber",
    "SegmentsPublisher",
    "Unset",
]


class Unset:
    """Type of :data:`UNSET`."""

    def __repr__(self) -> str:
        return "UNSET"


#: "Argument not given": a per-call ``timeout=UNSET`` means the constructor's timeout,
#: while ``None`` means wait forever.
UNSET: Final = Unset()


@runtime_checkable
class MessagePublisher(Protocol):
    """Publisher interface to a message stream."""

    def close(self) -> None:
        """Close this publisher (idempotent)."""
        ...

    def send_message(self, topic: str, message: bytes) -> None:
        """Publish a message to the stream.

        Args:
            topic: Stream topic to publish the message to.
            message: Message as bytes to publish to the stream.
        """
        ...


@runtime_checkable
class MessageSubscriber(Protocol):
    """Subscriber interface to a message stream.

    Iterating yields messages until the subscription ends (``StopIteration``).
    """

    def __iter__(self) -> MessageSubscriber: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None:
        """Close this subscriber (idempotent)."""
        ...

    def next_message(self) -> bytes:
        """Get the next message.

        Framework subscribers also accept ``timeout=`` (seconds, ``None`` waits
        forever) and raise :class:`~framework.exceptions.ReceiveTimeout` when it
        expires; a subscription that was interrupted raises
        :class:`~framework.exceptions.MessageLossError` once and then carries on.

        Raises:
            StopIteration: When the subscription has ended or was closed.
        """
        ...


@runtime_checkable
class SegmentsPublisher(Protocol):
    """Optional capability: the publisher sends multi-part messages without joining them."""

    accepts_segments: Literal[True]

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Publish a message given as bytes or as zero-copy segments."""
        ...


@runtime_checkable
class AtomicPublisher(Protocol):
    """Optional capability: store a batch's objects and publish its event as one step.

    The only way the stream layer publishes through a Redis publisher. The store's
    writes arrive as opaque Redis commands (a
    :class:`~framework.store.StagingStore`'s ``StagedBatch.commands``); the publisher
    runs them before the message, in the same round trip, and publishes the message
    only if every write succeeded (``MULTI``/``EXEC``, or on a cluster, where the
    writes live in other slots, a checked round trip before the publish). So a
    message never names an object that was not stored, also when Redis refuses
    writes (``maxmemory``).

    Attributes:
        connection: The Redis connection the commands and the message go through.
    """

    connection: Any

    def publish(
        self,
        topic: str,
        message: bytes | Segments,
        *,
        commands: Sequence[tuple[Any, ...]] = (),
        final: bool = False,
        source: str = "",
        retry: bool = False,
    ) -> None:
        """Run ``commands``, then publish ``message``, atomically.

        Resending after a failure is safe: the commands are idempotent ``SET`` s and
        consumers drop a duplicate message by its sequence numbers.

        Args:
            topic: Topic to publish to.
            message: The message (segments are sent without being joined).
            commands: Store writes to run first.
            final: The message ends ``source``'s part of the topic (durable topics
                record it, so every consumer-group member ends).
            source: Stable id of the sending producer (durable topics track which
                producers are still open).
            retry: An earlier attempt failed and may have arrived: durable topics
                then append the message only if it is not already there.

        Raises:
            BackendError: If Redis failed or refused a write; nothing was published
                unless the error says the outcome is unknown (connection lost).
        """
        ...


@runtime_checkable
class AckingSubscriber(Protocol):
    """Optional capability: delivered messages stay pending until acknowledged.

    Attributes:
        acks: Whether acknowledgements are in force (a durable subscriber acks only
            as a consumer-group member). The consumer acknowledges a message once
            its last object is handed over and defers evictions until then.
    """

    acks: bool

    def ack_message(self) -> None:
        """Acknowledge the message most recently returned by ``next_message`` (idempotent)."""
        ...


@runtime_checkable
class PollingSubscriber(Protocol):
    """Optional capability: return a message only if one is already waiting."""

    def poll_message(self) -> bytes | None:
        """Return the next message if it is already here, else ``None`` at once.

        Raises:
            StopIteration: When the subscription has ended or was closed.
            MessageLossError: As ``next_message``.
        """
        ...


@runtime_checkable
class DescribedSubscriber(Protocol):
    """Optional capability: the subscriber says what it listens to and how it delivers.

    Attributes:
        topics: Every topic this subscriber listens to (empty when unknown). A
            consumer ends once each of them has ended.
        complete: True when this subscriber receives every event of its topics
            in publication order, so a gap in a producer's sequence numbers
            means events were lost. False for consumer-group members, which
            see only their share.
    """

    topics: tuple[str, ...]
    complete: bool

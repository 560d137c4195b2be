"""Every error the framework raises, under one root.

Catch :class:`FrameworkError` to handle anything raised here; catch a branch to
handle one layer. Redis client exceptions never escape: backend modules map them
to the :class:`BackendError` branch (see :func:`framework.connection.mapped_errors`).
The root and the branches of the bottom layers (configuration, backend, serialization,
framing, security) are defined in :mod:`framework._core_errors` and re-exported here,
under this module's name.

```
FrameworkError
├── ConfigurationError            bad settings, URL or argument combination (also a ValueError)
├── BackendError                  Redis answered with an error
│   ├── BackendUnavailable        cannot reach Redis / connection dropped
│   ├── BackendTimeout            Redis did not answer in time
│   ├── AuthenticationFailed      Redis refused the credentials, or needs some and got none
│   └── PermissionDenied          the ACL user may not run that command on that key/channel
├── SerializationError            an object could not be serialized
│   └── DeserializationError      bytes could not be turned back into an object
├── FramingError                  a frame or chunk is malformed
│   ├── TruncatedFrameError       fewer bytes than the header announces
│   ├── UnsupportedVersionError   a wire version this build does not speak
│   ├── ChecksumError             a chunk's checksum does not match its bytes
│   ├── SequenceError             a missing, duplicate or out-of-order chunk
│   └── MalformedFrameError       a frame or control entry lacks a field or is not valid JSON
├── SecurityError                 a payload failed authentication
│   ├── MissingSignatureError     unsigned data reached a receiver that has a secret
│   ├── BadSignatureError         the MAC does not match (tampered or wrong secret)
│   └── EncryptionError           encryption unavailable, key missing, or decryption failed
├── StoreError                    object store failures
│   ├── ObjectNotFoundError       the key is absent (evicted, expired or never written; also a
│   │                             KeyError and, as ProxyStore's next_object raises, a ValueError)
│   ├── ProxyResolveError         a proxy could not produce its target
│   │   └── ProxyResolveMissingKeyError  its object is not in the store (ProxyStore's name)
│   └── UnknownStoreKindError     a config names a store kind that is not registered
├── ObjectStreamError             object streams (producer/consumer)
│   ├── TopicClosedError          send() on a topic that close_topics() ended
│   ├── MessageLossError          events were (possibly) lost: a gap, a dropped subscription
│   │   └── HeartbeatLapsedError  a producer was silent so long that consumers may count it gone
│   ├── BacklogFullError          a topic's unconsumed backlog stayed at its bound
│   ├── AggregationError          a producer's aggregator failed on a batch, which was not sent
│   └── ReceiveTimeout            nothing arrived within the wait timeout (also a TimeoutError)
├── StreamError                   byte streams (the NVFlare name and meaning)
│   ├── StreamCancelled           the other side cancelled or closed the transfer
│   ├── StreamTimeout             no progress within the idle timeout
│   ├── StreamDataLost            Redis lost chunks a receiver had not read yet
│   └── BlobSizeError             a blob is larger than the receiver accepts
└── ClosedError                   use of an object after close()
```
"""

from __future__ import annotations

from typing import Any

from framework._core_errors import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadSignatureError,
    ChecksumError,
    ConfigurationError,
    DeserializationError,
    EncryptionError,
    FrameworkError,
    FramingError,
    MalformedFrameError,
    MissingSignatureError,
    PermissionDenied,
    SecurityError,
    SequenceError,
    SerializationError,
    TruncatedFrameError,
    UnsupportedVersionError,
)

__all__ = [
    "AggregationError",
    "AuthenticationFailed",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BacklogFullError",
    "BadSignatureError",
    "BlobSizeError",
    "ChecksumError",
    "ClosedError",
    "ConfigurationError",
    "DeserializationError",
    "EncryptionError",
    "FrameworkError",
    "FramingError",
    "HeartbeatLapsedError",
    "MalformedFrameError",
    "MessageLossError",
    "MissingSignatureError",
    "ObjectNotFoundError",
    "ObjectStreamError",
    "PermissionDenied",
    "ProxyResolveError",
    "ProxyResolveMissingKeyError",
    "ProxyStoreFactoryError",
    "ReceiveTimeout",
    "SecurityError",
    "SequenceError",
    "SerializationError",
    "StoreError",
    "StoreExistsError",
    "StreamCancelled",
    "StreamDataLost",
    "StreamError",
    "StreamTimeout",
    "TopicClosedError",
    "TruncatedFrameError",
    "UnknownStoreKindError",
    "UnsupportedVersionError",
]


class StoreError(FrameworkError):
    """An object store operation failed."""


class ObjectNotFoundError(StoreError, KeyError, ValueError):
    """The key is absent: evicted, expired or never written.

    A :class:`KeyError` (a missing key) and a :class:`ValueError`: ProxyStore's
    ``StreamConsumer.next_object`` raises ``ValueError`` when the store does not return
    an object, and ported ``except ValueError`` handlers must keep working.

    Attributes:
        key: The missing key.
        store: Name of the store that was asked.
        hint: What else may explain it, where the caller knows (or empty).
        topic: The stream topic whose event named the object, if any.
    """

    def __init__(self, key: str, store: str, hint: str = "", topic: str | None = None) -> None:
        of_topic = "" if topic is None else f" of topic {topic!r}"
        super().__init__(
            f"Object {key!r}{of_topic} is not in store {store!r}: it was evicted, expired "
            f"or never written.{' ' + hint if hint else ''}"
        )
        self.key = key
        self.store = store
        self.hint = hint
        self.topic = topic

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; keep it a sentence.
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.key, self.store, self.hint)


class StoreExistsError(StoreError):
    """Another store is already registered under the name (ProxyStore's name)."""


class ProxyStoreFactoryError(StoreError):
    """A proxy's factory is not a store factory, so it names no key or store."""


class ProxyResolveError(StoreError):
    """A proxy could not produce its target object.

    Args:
        message: What failed.
        cause: The exception that prevented resolving (also ``__cause__``).

    Attributes:
        cause: The exception that prevented resolving, as ProxyStore names it;
            ``None`` if there was none.
    """

    def __init__(self, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self._cause = cause
        if cause is not None:
            self.__cause__ = cause

    @property
    def cause(self) -> BaseException | None:
        """The exception that prevented resolving (``raise ... from`` sets it too)."""
        return self._cause if self._cause is not None else self.__cause__

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (e.g. from a worker process) with its cause when the cause pickles.
        return type(self), (str(self), self.cause)


class ProxyResolveMissingKeyError(ProxyResolveError):
    """A proxy's object is not in its store: evicted, expired or never written.

    ProxyStore's name; ``cause`` is the :class:`ObjectNotFoundError`.
    """


class UnknownStoreKindError(StoreError):
    """A store config names a kind that is not registered in this process."""


class ObjectStreamError(FrameworkError):
    """An object stream (producer or consumer) failed."""


class TopicClosedError(ObjectStreamError):
    """An object was sent to a topic that has been closed."""


class AggregationError(ObjectStreamError):
    """A producer's aggregator raised on a batch, or its result could not be serialized.

    The batch was taken out of the buffer and not published (keeping it would fail
    every later flush of the topic); its objects are here, to send again or keep. The
    aggregator's exception is the ``__cause__``.

    Attributes:
        topic: The batch's topic.
        aggregator: Name of the aggregator.
        objects: The batch's objects, in the order they were sent.
        metadata: Their metadata, in the same order.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        aggregator: str,
        objects: list[Any],
        metadata: list[dict[str, Any]],
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.aggregator = aggregator
        self.objects = objects
        self.metadata = metadata


class MessageLossError(ObjectStreamError):
    """Events were lost, or may have been.

    A producer's sequence has a gap, a subscription dropped, or a durable topic's
    entries or consumer group vanished.

    Attributes:
        topic: Topic on which events were lost.
        producer: Identifier of the producer whose events are missing, when known.
        expected: The sequence number the consumer expected next, when known.
        received: The sequence number that arrived instead, when known.
        first: First lost sequence number, when known.
        last: Last lost sequence number (inclusive), when known.
        count: How many events were lost, when known.
        possible: True when the events *may* have been lost (an interruption, a late
            start, a vanished group) and nothing can tell; False when they were.
        gone: True when ``producer`` stopped without ending ``topic`` (its heartbeats
            stopped): consumers count it as ended.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        producer: str | None = None,
        expected: int | None = None,
        received: int | None = None,
        count: int | None = None,
        possible: bool = False,
        gone: bool = False,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.producer = producer
        self.expected = expected
        self.received = received
        self.first = expected
        self.last = None if received is None else received - 1
        if count is None and expected is not None and received is not None:
            count = received - expected
        self.count = count
        self.possible = possible
        self.gone = gone

    @classmethod
    def gap(
        cls, topic: str, producer: str, expected: int, received: int, *, possible: bool = False
    ) -> MessageLossError:
        """Build the error for a sequence gap: ``expected`` was due, ``received`` came."""
        verb = "Possibly lost" if possible else "Lost"
        return cls(
            f"{verb} {received - expected} event(s) on topic {topic!r} from producer "
            f"{producer!r}: sequence {expected} to {received - 1} (expected {expected}, "
            f"received {received}).",
            topic=topic,
            producer=producer,
            expected=expected,
            received=received,
            possible=possible,
        )


class HeartbeatLapsedError(MessageLossError):
    """A producer said nothing on a topic for longer than its consumers wait for it.

    Raised by the producer itself, at its next call on that topic (or at ``close()``):
    its process was stopped or starved (a long call holding the GIL, swapping) and its
    heartbeats did not go out. Consumers that were listening meanwhile have reported
    it gone and counted it as ended, so they may not read what it sends from
    ``expected`` on. Each silence is reported once.

    Attributes:
        silent: Seconds the producer said nothing on ``topic``.
        patience: Seconds of silence after which consumers count a producer gone.
    """

    def __init__(
        self,
        message: str,
        *,
        topic: str,
        producer: str,
        expected: int,
        silent: float,
        patience: float,
    ) -> None:
        super().__init__(
            message, topic=topic, producer=producer, expected=expected, possible=True, gone=True
        )
        self.silent = silent
        self.patience = patience


class BacklogFullError(ObjectStreamError, TimeoutError):
    """A topic's unconsumed backlog stayed at its bound for the whole back-pressure timeout.

    Attributes:
        topic: The topic.
        objects: Unconsumed objects when the wait ended.
        nbytes: Unconsumed bytes when the wait ended.
    """

    def __init__(self, message: str, *, topic: str, objects: int, nbytes: int) -> None:
        super().__init__(message)
        self.topic = topic
        self.objects = objects
        self.nbytes = nbytes


class ReceiveTimeout(ObjectStreamError, TimeoutError):
    """Nothing arrived within the wait timeout."""


class StreamError(FrameworkError):
    """A byte stream failed (NVFlare's ``StreamError``)."""


class StreamCancelled(StreamError):
    """The transfer was cancelled by the sender or closed by the receiver."""


class StreamTimeout(StreamError):
    """A transfer made no progress within its idle timeout.

    Not a ``TimeoutError``: ``StreamFuture.result(timeout)`` raises ``TimeoutError`` while
    the transfer is still running, and a loop waiting on that must not take a transfer
    that failed for one still running (NVFlare's failed transfers are no
    ``TimeoutError`` either).
    """


class StreamDataLost(StreamError):
    """Redis lost chunks a receiver had not read yet; sending the data again is the way on.

    Redis restarted without persistence, was flushed, or evicted them.
    """


class BlobSizeError(StreamError):
    """A blob is larger than the receiver accepts."""


class ClosedError(FrameworkError):
    """An object was used after ``close()``."""

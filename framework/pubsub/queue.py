"""In-process publisher and subscriber over :class:`queue.Queue` (ProxyStore's queue shims).

Useful for tests and for threads of one process. Each topic maps to one queue; a
subscriber reads one queue. Messages are ``bytes``. Waits are bounded: a
subscriber polls its queue in short slices so :meth:`QueueSubscriber.close`
from another thread ends a blocked :meth:`QueueSubscriber.next_message`.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence

from framework.buffers import Segments
from framework.exceptions import BackendTimeout, ClosedError, ConfigurationError, ReceiveTimeout
from framework.pubsub.protocols import UNSET, Unset

__all__ = ["QueueEmptyTimeout", "QueueFullTimeout", "QueuePublisher", "QueueSubscriber"]

#: Longest single wait (s) on a queue before the closed flag is checked again.
POLL_INTERVAL = 0.25


class QueueEmptyTimeout(ReceiveTimeout, queue.Empty):
    """No message arrived in time.

    A ``ReceiveTimeout`` that is also the ``queue.Empty`` ProxyStore's queue subscriber
    raises, so either ``except`` catches it.
    """


class QueueFullTimeout(BackendTimeout, queue.Full):
    """A bounded queue stayed full.

    A ``BackendTimeout`` that is also the ``queue.Full`` ProxyStore's queue publisher
    raises.
    """


class QueuePublisher:
    """Publish messages to in-process queues, one queue per topic.

    Args:
        queues: Mapping from topic to the queue its messages go to.
        block: Block when a bounded queue is full.
        timeout: Longest wait (s) for room in a full queue; ``None`` waits forever.
    """

    def __init__(
        self,
        queues: Mapping[str, queue.Queue[bytes]],
        *,
        block: bool = True,
        timeout: float | None = None,
    ) -> None:
        self._queues = dict(queues)
        self._block = block
        self._timeout = timeout
        self._closed = False

    def __enter__(self) -> QueuePublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this publisher (idempotent); the queues stay usable by others."""
        self._closed = True

    def check_topic(self, topic: str) -> None:
        """Raise :class:`ConfigurationError` unless a queue is mapped to ``topic``.

        A :class:`~framework.stream.StreamProducer` asks before it buffers anything for a
        new topic: a message it could never publish would otherwise stay pending, and
        every later flush, and ``close()``, would fail on it.
        """
        if topic not in self._queues:
            mapped = ", ".join(repr(t) for t in sorted(self._queues)) or "none"
            raise ConfigurationError(
                f"No queue is mapped to topic {topic!r} (mapped topics: {mapped:.200})."
            )

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Put ``message`` on the queue of ``topic``.

        Args:
            topic: Topic whose queue receives the message.
            message: The message; segments are joined into one ``bytes``.

        Raises:
            ClosedError: If the publisher was closed.
            ConfigurationError: If no queue is mapped to ``topic``.
            QueueFullTimeout: If a bounded queue stayed full for ``timeout`` seconds (a
                ``BackendTimeout`` and a ``queue.Full``).
        """
        if self._closed:
            raise ClosedError(f"Cannot publish to topic {topic!r}: the publisher is closed.")
        self.check_topic(topic)
        target = self._queues[topic]
        data = message.join() if isinstance(message, Segments) else bytes(message)
        try:
            target.put(data, block=self._block, timeout=self._timeout)
        except queue.Full:
            raise QueueFullTimeout(f"The queue of topic {topic!r} stayed full.") from None


class QueueSubscriber:
    """Read messages from one in-process queue.

    Args:
        queue: The queue to read.
        block: Wait for a message; with ``False`` an empty queue raises at once.
        timeout: Longest wait (s) for a message, ``None`` waits forever.
        topics: Topics published into this queue, when known; a consumer then ends
            once each of them has ended.

    Attributes:
        topics: The topics given at construction.
        complete: Always True: a queue delivers every message in order.
    """

    complete = True

    def __init__(
        self,
        queue: queue.Queue[bytes],
        *,
        block: bool = True,
        timeout: float | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._queue = queue
        self._block = block
        self._timeout = timeout
        self.topics: tuple[str, ...] = tuple(topics)
        self._closed = threading.Event()

    def __enter__(self) -> QueueSubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> QueueSubscriber:
        return self

    def __next__(self) -> bytes:
        return self.next_message()

    def close(self) -> None:
        """Close this subscriber (idempotent); a blocked reader stops within 0.25 s."""
        self._closed.set()

    def poll_message(self) -> bytes | None:
        """Return the next message if one is already waiting, else ``None``.

        Raises:
            StopIteration: If the subscriber is closed.
            MessageLossError: As :meth:`next_message`.
        """
        if self._closed.is_set():
            raise StopIteration
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None

    def next_message(self, *, timeout: float | Unset | None = UNSET) -> bytes:
        """Return the next message from the queue.

        Args:
            timeout: Overrides the constructor's timeout for this call.

        Raises:
            StopIteration: If the subscriber is (or gets) closed.
            QueueEmptyTimeout: If no message arrived in time (or at once, when not
                blocking); a ``ReceiveTimeout`` and a ``queue.Empty``.
        """
        limit = self._timeout if isinstance(timeout, Unset) else timeout
        deadline = None if limit is None else time.monotonic() + limit
        while not self._closed.is_set():
            left = POLL_INTERVAL if deadline is None else deadline - time.monotonic()
            try:
                if not self._block or left <= 0:
                    return self._queue.get_nowait()
                return self._queue.get(timeout=min(left, POLL_INTERVAL))
            except queue.Empty:
                if not self._block or (deadline is not None and time.monotonic() >= deadline):
                    raise QueueEmptyTimeout(f"No message arrived within {limit} s.") from None
        raise StopIteration

"""Publishers and subscribers: Redis pub/sub, durable Redis streams, in-process queues.

Message-level shims satisfying :class:`MessagePublisher` / :class:`MessageSubscriber`
(ProxyStore's protocols), used by :mod:`framework.stream`:

* :class:`RedisPublisher` / :class:`RedisSubscriber`: Redis pub/sub (sharded on a
  cluster), at-most-once, interruptions reported.
* :class:`RedisStreamPublisher` / :class:`RedisStreamSubscriber`: Redis streams,
  durable, replayable, consumer groups.
* :class:`RedisQueuePublisher` / :class:`RedisQueueSubscriber`: Redis lists, each
  message to one of the competing subscribers (ProxyStore's queue shims).
* :class:`QueuePublisher` / :class:`QueueSubscriber`: in-process ``queue.Queue``.

The Redis shims also take ProxyStore's ``(hostname, port, ...)`` construction forms.
"""

from __future__ import annotations

from framework.pubsub.lists import RedisQueuePublisher, RedisQueueSubscriber
from framework.pubsub.protocols import (
    UNSET,
    AckingSubscriber,
    AtomicPublisher,
    DescribedSubscriber,
    MessagePublisher,
    MessageSubscriber,
    SegmentsPublisher,
    Unset,
)
from framework.pubsub.queue import QueuePublisher, QueueSubscriber
from framework.pubsub.redis import RedisPublisher, RedisSubscriber
from framework.pubsub.streams import RedisStreamPublisher, RedisStreamSubscriber

__all__ = [
    "UNSET",
    "AckingSubscriber",
    "AtomicPublisher",
    "DescribedSubscriber",
    "MessagePublisher",
    "MessageSubscriber",
    "QueuePublisher",
    "QueueSubscriber",
    "RedisPublisher",
    "RedisQueuePublisher",
    "RedisQueueSubscriber",
    "RedisStreamPublisher",
    "RedisStreamSubscriber",
    "RedisSubscriber",
    "SegmentsPublisher",
    "Unset",
]

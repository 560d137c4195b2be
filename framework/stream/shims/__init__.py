"""ProxyStore's ``proxystore.stream.shims`` names for the shims of :mod:`framework.pubsub`."""

from __future__ import annotations

from framework.pubsub import (
    QueuePublisher,
    QueueSubscriber,
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisSubscriber,
)

__all__ = [
    "QueuePublisher",
    "QueueSubscriber",
    "RedisPublisher",
    "RedisQueuePublisher",
    "RedisQueueSubscriber",
    "RedisSubscriber",
]

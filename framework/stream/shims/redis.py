"""ProxyStore's ``proxystore.stream.shims.redis``: the Redis pub/sub and list shims."""

from __future__ import annotations

from framework.pubsub.lists import RedisQueuePublisher, RedisQueueSubscriber
from framework.pubsub.redis import RedisPublisher, RedisSubscriber

__all__ = ["RedisPublisher", "RedisQueuePublisher", "RedisQueueSubscriber", "RedisSubscriber"]

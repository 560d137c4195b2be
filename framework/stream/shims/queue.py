"""ProxyStore's ``proxystore.stream.shims.queue``: the in-process queue shims."""

from __future__ import annotations

from framework.pubsub.queue import QueuePublisher, QueueSubscriber

__all__ = ["QueuePublisher", "QueueSubscriber"]

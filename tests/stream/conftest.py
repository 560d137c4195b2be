"""Stream test fixtures: in-process queue pairs."""

from __future__ import annotations

import queue

import pytest

from framework.pubsub import QueuePublisher, QueueSubscriber


@pytest.fixture
def queue_pair() -> tuple[QueuePublisher, QueueSubscriber]:
    """A publisher of topics "a" and "b" into one queue, and a subscriber of that queue."""
    shared: queue.Queue[bytes] = queue.Queue()
    publisher = QueuePublisher({"a": shared, "b": shared})
    return publisher, QueueSubscriber(shared, timeout=5, topics=["a", "b"])

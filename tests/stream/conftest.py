"""Stream test fixtures: a registry guard and in-process queue pairs."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from framework.pubsub import QueuePublisher, QueueSubscriber
from framework.store import registered_stores, unregister_store


@pytest.fixture(autouse=True)
def _no_leaked_store_registrations() -> Iterator[None]:
    """Fail a test that leaves a store registered (close(stores=True) releases them)."""
    before = {id(store) for store in registered_stores()}
    yield
    leaked = [store for store in registered_stores() if id(store) not in before]
    for store in leaked:
        unregister_store(store)
        store.close()
    if leaked:
        pytest.fail(f"The test left stores registered: {leaked}.", pytrace=False)


@pytest.fixture
def queue_pair() -> tuple[QueuePublisher, QueueSubscriber]:
    """A publisher of topics "a" and "b" into one queue, and a subscriber of that queue."""
    shared: queue.Queue[bytes] = queue.Queue()
    publisher = QueuePublisher({"a": shared, "b": shared})
    return publisher, QueueSubscriber(shared, timeout=5, topics=["a", "b"])

"""Faults under the ProxyStore-shaped API, on a real redis-server: nothing lost or a clear error.

Dropped connections (``CLIENT KILL``) are ridden out, a stopped server is a
``BackendUnavailable`` naming it (never a hang), and garbage written into an object key
or a list topic is refused with an error naming what was wrong.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from framework.connectors.redis import RedisConnector
from framework.embedded import EmbeddedRedis
from framework.exceptions import BackendUnavailable, FrameworkError
from framework.store import Store
from framework.store.utils import get_key
from framework.stream import StreamConsumer
from framework.stream.shims.redis import RedisQueuePublisher, RedisQueueSubscriber


@pytest.fixture
def server(require_redis_server: None) -> Iterator[EmbeddedRedis]:
    """A private redis-server for one test (it may be stopped)."""
    with EmbeddedRedis(fake_fallback=False) as server:
        yield server


def _kill_clients(port: int) -> int:
    with redis.Redis(host="127.0.0.1", port=port) as admin:
        return int(admin.client_kill_filter(_type="normal", skipme=True))


def test_a_killed_connection_mid_pop_loses_nothing(server: EmbeddedRedis) -> None:
    port = server.ports[0]
    with RedisQueueSubscriber("127.0.0.1", port, "jobs", timeout=20) as subscriber:
        received: list[object] = []
        reader = threading.Thread(
            target=lambda: received.append(subscriber.next_message()), name="pop"
        )
        reader.start()
        time.sleep(0.3)  # let the reader block in BLPOP (timing only orders the fault)
        assert _kill_clients(port) >= 1
        with RedisQueuePublisher("127.0.0.1", port) as publisher:
            publisher.send_message("jobs", b"sent after the kill")
        reader.join(timeout=20)
        assert received == [b"sent after the kill"]


def test_a_store_rides_out_a_killed_connection(server: EmbeddedRedis) -> None:
    port = server.ports[0]
    with Store("killed", RedisConnector("127.0.0.1", port)) as store:
        key = store.put({"before": 1})
        _kill_clients(port)
        assert store.get(key) == {"before": 1}
        proxy = store.proxy({"after": 2})
        _kill_clients(port)
        assert proxy == {"after": 2}


def test_a_stopped_server_is_a_clear_error_not_a_hang(server: EmbeddedRedis) -> None:
    port = server.ports[0]
    store = Store("stopped", RedisConnector("127.0.0.1", port, socket_timeout=2))
    subscriber = RedisQueueSubscriber("127.0.0.1", port, "t", timeout=30, max_outage=1)
    try:
        key = store.put("x")
        server.close()
        with pytest.raises(BackendUnavailable, match=str(port)):
            store.get(key)
        with pytest.raises(BackendUnavailable, match="pop from topic 't'"):
            subscriber.next_message()
    finally:
        subscriber.close()
        store.close()


def test_garbage_in_an_object_key_is_refused(server: EmbeddedRedis) -> None:
    port = server.ports[0]
    with Store("forged", RedisConnector("127.0.0.1", port)) as store:
        proxy = store.proxy({"real": True})
        with redis.Redis(host="127.0.0.1", port=port) as client:
            client.set(get_key(proxy), b"\x00garbage, not a frame")
        with pytest.raises(FrameworkError, match=r"frame|version|decode"):
            store.get(get_key(proxy))


def test_garbage_on_a_list_topic_is_refused_by_the_consumer(server: EmbeddedRedis) -> None:
    port = server.ports[0]
    with RedisQueuePublisher("127.0.0.1", port) as publisher:
        publisher.send_message("t", b"not an event batch")
    subscriber = RedisQueueSubscriber("127.0.0.1", port, "t", timeout=10)
    with StreamConsumer[object](subscriber) as consumer, pytest.raises(FrameworkError):
        consumer.next()

"""Competing consumers of a list topic lose nothing they did not hand over, and get no copy.

A consumer used to drain up to 1024 waiting messages into its own memory: closing it
(or killing its process) after it had handed over a few lost the rest for every other
consumer. Now a list consumer takes one message at a time, and closing it puts the
events it did not hand over back at the head of the list (fakeredis and real Redis;
the killed process crosses a process boundary on real Redis). A producer resending a
message whose push arrived but whose reply was lost no longer pushes it twice.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import BackendError, BackendUnavailable
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber
from framework.store import RedisStore, get_store, register_store, unregister_store
from framework.stream import StreamConsumer, StreamProducer

TOPIC = "jobs"
SECRET = b"k" * 32
N = 20


@pytest.fixture(autouse=True)
def _unregistered() -> Iterator[None]:
    """The test's store is registered (a fakeredis store cannot be rebuilt): forget it."""
    yield
    store = get_store("returns")
    unregister_store("returns")
    if store is not None:
        store.close()


def _produce(conn: RedisConnection, batch_size: int, stored: bool, secret: bytes | None) -> None:
    stores = None
    if stored:
        store = RedisStore("returns", connection=conn, secret=secret)
        register_store(store, exist_ok=True)
        stores = {TOPIC: store}
    producer = StreamProducer(
        RedisQueuePublisher(conn), stores=stores, batch_size=batch_size, secret=secret
    )
    for i in range(1, N + 1):
        producer.send(TOPIC, {"i": i}, metadata={"i": i}, evict=True)
    producer.close_topics(TOPIC)
    producer.close()


def _consumer(conn: RedisConnection, secret: bytes | None) -> StreamConsumer[Any]:
    subscriber = RedisQueueSubscriber(conn, TOPIC, timeout=5)
    return StreamConsumer(subscriber, timeout=5, secret=secret)


@pytest.mark.parametrize("batch_size", [1, 5], ids=["batch-1", "batch-5"])
@pytest.mark.parametrize("stored", [False, True], ids=["inline", "stored"])
@pytest.mark.parametrize("secret", [None, SECRET], ids=["plain", "signed"])
def test_a_closing_consumer_gives_back_what_it_did_not_hand_over(
    conn: RedisConnection, batch_size: int, stored: bool, secret: bytes | None
) -> None:
    _produce(conn, batch_size, stored, secret)
    first = _consumer(conn, secret)
    taken = [first.next_object()["i"] for _ in range(3)]
    first.close()  # before: the other 17 (drained into its queue) were lost
    second = _consumer(conn, secret)
    rest = [obj["i"] for obj in second.iter_objects()]  # before: ReceiveTimeout, empty
    second.close()
    assert taken == [1, 2, 3]
    assert rest == list(range(4, N + 1))


def test_a_given_back_batch_keeps_its_metadata_and_its_objects(real_conn: RedisConnection) -> None:
    """Objects of events given back stay in the store until the consumer that uses them."""
    _produce(real_conn, 5, True, None)
    first = _consumer(real_conn, None)
    assert first.next_with_metadata()[0] == {"i": 1}  # a proxy: nothing fetched yet
    assert first.next_object_with_metadata() == ({"i": 2}, {"i": 2})  # fetches 2..5 ahead
    first.close()
    second = _consumer(real_conn, None)
    rest = list(second.iter_objects_with_metadata())
    second.close()
    assert rest == [({"i": i}, {"i": i}) for i in range(3, N + 1)]
    assert not real_conn.client.keys("*returns*")  # each object evicted once used


def _take_three_and_die(url: str, taken: Any) -> None:
    with RedisConnection.from_url(url) as conn:
        consumer = _consumer(conn, None)
        for _ in range(3):
            taken.put(consumer.next_object()["i"])
        os.kill(os.getpid(), 9)  # no close: what it took but did not hand over dies too


def test_a_killed_consumer_loses_no_message_it_did_not_hand_over(
    real_conn: RedisConnection, redis_url: str
) -> None:
    """The README: a process killed after a message was handed to it loses that message only."""
    _produce(real_conn, 1, False, None)
    spawn = multiprocessing.get_context("spawn")
    taken = spawn.SimpleQueue()  # written at once: the child is killed right after
    proc = spawn.Process(target=_take_three_and_die, args=(redis_url, taken))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    first = sorted(taken.get() for _ in range(3))
    second = _consumer(real_conn, None)
    rest = [obj["i"] for obj in second.iter_objects()]  # before: 17 were in the dead queue
    second.close()
    assert first == [1, 2, 3]
    assert rest == list(range(4, N + 1))


def test_a_resent_message_whose_push_arrived_is_not_pushed_again(
    conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis applied the third push, then the connection dropped before its reply."""
    from framework.pubsub import lists

    real, calls = lists.run_atomic, [0]

    def reply_lost(*args: Any, **kwargs: Any) -> Any:
        replies = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            raise redis.ConnectionError("Connection closed by server.")
        return replies

    monkeypatch.setattr(lists, "run_atomic", reply_lost)
    producer = StreamProducer(RedisQueuePublisher(conn))
    producer.send(TOPIC, 1)
    producer.send(TOPIC, 2)
    kept = r"resent, once, by the next send\(\), flush\(\) or close\(\).*do not send them again"
    with pytest.raises(BackendUnavailable, match=kept):
        producer.send(TOPIC, 3)
    producer.send(TOPIC, 4)  # resends 3 first
    producer.send(TOPIC, 5)
    producer.close(topics=[TOPIC])
    consumer = _consumer(conn, None)
    got = list(consumer.iter_objects())  # before: [1, 2, 3, 3, 4, 5]
    consumer.close()
    assert got == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("kind", ["list", "pubsub"])
def test_a_store_refusing_a_send_says_its_objects_are_kept(
    real_conn: RedisConnection, redis_url: str, kind: str
) -> None:
    """ProxyStore's call forms: the store and the publisher on connections of their own."""
    from framework.connectors.redis import RedisConnector
    from framework.store import Store
    from framework.stream.shims.redis import (
        RedisPublisher,
        RedisQueuePublisher,
        RedisQueueSubscriber,
        RedisSubscriber,
    )

    host, port = (
        real_conn.blocking.connection_pool.connection_kwargs["host"],
        int(redis_url.rsplit(":", 1)[1].split("/")[0]),
    )
    store = Store("objs", RedisConnector(host, port))
    if kind == "list":
        sub: Any = RedisQueueSubscriber(host, port, TOPIC, timeout=10)
        pub: Any = RedisQueuePublisher(host, port)
    else:
        sub, pub = RedisSubscriber(host, port, TOPIC, timeout=10), RedisPublisher(host, port)
    producer = StreamProducer(pub, stores={TOPIC: store})
    with StreamConsumer(sub, timeout=10) as consumer:
        producer.send(TOPIC, "a", evict=True)
        real_conn.client.config_set("maxmemory", 1)
        try:
            kept = r"stored and published, once, by the next send\(\).*do not send them again"
            with pytest.raises(BackendError, match=r"'maxmemory'\. The objects are kept") as err:
                producer.send(TOPIC, "b", evict=True)
            assert re.search(kept, str(err.value))
        finally:
            real_conn.client.config_set("maxmemory", 0)
        producer.send(TOPIC, "c", evict=True)  # stores and publishes "b" first
        producer.close_topics(TOPIC)
        producer.close()
        got = list(consumer.iter_objects())
    unregister_store("objs")  # ProxyStore's Store registers itself
    store.close()
    assert got == ["a", "b", "c"]

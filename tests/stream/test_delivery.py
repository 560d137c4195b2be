"""Delivery promises: several producers, retryable close, ack after hand-over, back-pressure,
topic reuse, restarted producers, object TTLs (fakeredis and real Redis)."""

from __future__ import annotations

import pickle
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import (
    BackendUnavailable,
    BacklogFullError,
    ObjectNotFoundError,
    ReceiveTimeout,
)
from framework.proxy import get_factory
from framework.pubsub import (
    QueuePublisher,
    QueueSubscriber,
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore, register_store, unregister_store
from framework.store.utils import get_key
from framework.stream import BacklogBound, StreamConsumer, StreamProducer

MODES = ["pubsub", "durable", "group"]


@pytest.fixture
def store(conn: RedisConnection) -> Iterator[RedisStore]:
    """A Redis store without a TTL of its own, registered so consumers find it."""
    with RedisStore("s", connection=conn) as store:
        register_store(store)
        yield store
        unregister_store(store)


def _pair(conn: RedisConnection, mode: str) -> tuple[Any, Any]:
    if mode == "pubsub":
        return RedisPublisher(conn), RedisSubscriber(conn, "t", timeout=10)
    group = "g" if mode == "group" else None
    return RedisStreamPublisher(conn), RedisStreamSubscriber(conn, "t", group=group, timeout=10)


@pytest.mark.parametrize("mode", MODES)
def test_two_producers_each_close_and_every_object_arrives(
    conn: RedisConnection, mode: str
) -> None:
    publisher, subscriber = _pair(conn, mode)
    consumer = StreamConsumer[int](subscriber, timeout=10)
    first = StreamProducer[int](publisher)
    second = StreamProducer[int](_pair(conn, mode)[0])
    for i in range(5):
        first.send("t", i)
        second.send("t", 100 + i)
    first.close(topics=["t"])  # the topic goes on: the other producer has not ended
    for i in range(5, 10):
        second.send("t", 100 + i)
    second.close(topics=["t"])
    got = sorted(consumer.iter_objects())
    assert got == [*range(5), *range(100, 110)]
    consumer.close()


def test_failed_close_can_be_retried_and_publishes_the_rest() -> None:
    shared: queue.Queue[bytes] = queue.Queue()

    class Flaky(QueuePublisher):
        failures = 1

        def send_message(self, topic: str, message: bytes) -> None:
            if self.failures:
                self.failures -= 1
                raise BackendUnavailable("The connection dropped.")
            super().send_message(topic, message)

    producer = StreamProducer[int](Flaky({"t": shared}), batch_size=100)
    for i in range(50):
        producer.send("t", i)
    with pytest.raises(BackendUnavailable):
        producer.close(topics=["t"])
    producer.close()  # publishes the 50 objects and the end
    producer.close()  # done: nothing more
    consumer = StreamConsumer[int](QueueSubscriber(shared, timeout=5, topics=["t"]))
    assert list(consumer.iter_objects()) == list(range(50))


def test_failed_fetch_keeps_the_entry_pending_and_delivers_it_next(
    conn: RedisConnection, store: RedisStore
) -> None:
    with StreamProducer[int](RedisStreamPublisher(conn), default_store=store) as producer:
        for i in range(3):
            producer.send("t", i)
        producer.close_topics("t")
    subscriber = RedisStreamSubscriber(conn, "t", group="g", consumer="c", timeout=5)
    consumer = StreamConsumer[int](subscriber, timeout=5)
    assert consumer.next_object() == 0
    real_get = RedisStore._get_each  # what the consumer fetches with
    calls = {"n": 0}

    def failing_get(self: RedisStore, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BackendUnavailable("The store server is down.")
        return real_get(self, *args, **kwargs)

    RedisStore._get_each = failing_get  # type: ignore[method-assign]
    try:
        with pytest.raises(BackendUnavailable):
            consumer.next_object()
        key = conn.keys.events("t")
        assert conn.client.xpending(key, "g")["pending"] >= 1  # not acknowledged
        assert list(consumer.iter_objects()) == [1, 2]
    finally:
        RedisStore._get_each = real_get  # type: ignore[method-assign]
    consumer.close()


def test_backpressure_blocks_then_raises_and_resumes(
    conn: RedisConnection, store: RedisStore
) -> None:
    bound = BacklogBound(objects=3, timeout=0.2)
    subscriber = RedisStreamSubscriber(conn, "t", timeout=5)
    consumer = StreamConsumer[bytes](subscriber, timeout=0.3)
    producer = StreamProducer[bytes](RedisStreamPublisher(conn), default_store=store, backlog=bound)
    for i in range(3):
        producer.send("t", b"%d" % i)
    with pytest.raises(BacklogFullError) as info:
        producer.send("t", b"3")
    assert (info.value.topic, info.value.objects) == ("t", 3)
    # A durable consumer evicts what it handed over once the caller comes back with its
    # queue empty (one UNLINK per read): still 3 unconsumed objects after two.
    assert [consumer.next_object(), consumer.next_object()] == [b"0", b"1"]
    with pytest.raises(BacklogFullError):
        producer.send("t", b"3")
    assert consumer.next_object() == b"2"
    with pytest.raises(ReceiveTimeout):
        consumer.next_object()  # evicts objects 0 to 2, then waits for more
    producer.send("t", b"3")
    producer.close(topics=["t"])
    assert list(consumer.iter_objects()) == [b"3"]
    consumer.close()


def test_backpressure_is_on_by_default_for_durable_topics_only(conn: RedisConnection) -> None:
    durable = StreamProducer[int](RedisStreamPublisher(conn))
    pubsub = StreamProducer[int](RedisPublisher(conn))
    assert durable._bound is not None
    assert durable._bound.nbytes is not None
    assert pubsub._bound is None
    durable.close()
    pubsub.close()


@pytest.mark.parametrize("group", [None, "g"])
def test_a_used_topic_name_works_again(
    conn: RedisConnection, store: RedisStore, group: str | None
) -> None:
    for run in range(2):
        with StreamProducer[int](RedisStreamPublisher(conn), default_store=store) as producer:
            for i in range(3):
                producer.send("t", 10 * run + i)
            producer.close_topics("t")
            subscriber = RedisStreamSubscriber(conn, "t", group=group, timeout=5)
        with StreamConsumer[int](subscriber, timeout=5) as consumer:
            assert list(consumer.iter_objects()) == [10 * run, 10 * run + 1, 10 * run + 2]
            consumer.close()


def test_restarted_producer_with_the_same_id_is_a_new_run() -> None:
    shared: queue.Queue[bytes] = queue.Queue()
    first = StreamProducer[int](QueuePublisher({"t": shared}), producer_id="p")
    for i in range(3):
        first.send("t", i)  # never closed: as if the process died
    second = StreamProducer[int](QueuePublisher({"t": shared}), producer_id="p")
    for i in range(3, 6):
        second.send("t", i)
    second.close(topics=["t"])
    consumer = StreamConsumer[int](QueueSubscriber(shared, timeout=5, topics=["t"]))
    assert list(consumer.iter_objects()) == list(range(6))


@pytest.mark.parametrize("mode", MODES)
def test_every_key_a_producer_writes_has_a_ttl(
    conn: RedisConnection, store: RedisStore, mode: str
) -> None:
    publisher, subscriber = _pair(conn, mode)
    done = threading.Event()
    with StreamProducer[bytes](publisher, default_store=store) as producer:
        producer.send("t", b"x" * 100)
        producer.send("t", b"y" * 100, evict=False)
        producer.close_topics("t")
    done.set()
    keys = list(conn.client.scan_iter("*"))
    assert keys
    assert all(conn.client.pttl(key) > 0 for key in keys)
    subscriber.close()


def test_a_resent_message_that_had_arrived_is_not_appended_again(conn: RedisConnection) -> None:
    publisher = RedisStreamPublisher(conn)
    publisher.publish("t", b"m1", source="p")
    publisher.publish("t", b"m1", source="p", retry=True)  # the first attempt had arrived
    publisher.publish("t", b"m2", source="p", retry=True)  # this one had not
    entries = conn.client.xrange(conn.keys.events("t"))
    assert [fields[b"m"] for _, fields in entries] == [b"m1", b"m2"]


def test_a_members_evicting_proxies_wait_for_its_ack_so_a_successor_finds_them(
    conn: RedisConnection, store: RedisStore
) -> None:
    """A member resolves evicting proxies, then dies before acknowledging their message."""
    with StreamProducer[int](
        RedisStreamPublisher(conn), default_store=store, batch_size=3
    ) as producer:
        for i in range(6):
            producer.send("t", i, evict=True)
        producer.close_topics("t")
    doomed = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="a", timeout=5), timeout=5
    )
    first = [doomed.next() for _ in range(3)]  # one message of three proxies
    assert [p + 0 for p in first[:2]] == [0, 1]  # two resolved; no ack yet: nothing evicted
    assert all(store.exists(get_key(p)) for p in first)
    # "a" dies here. Its message goes to "b" once it has been pending for claim_idle.
    successor = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="b", timeout=5, claim_idle=0.2),
        timeout=5,
    )
    time.sleep(0.3)
    got = [proxy + 0 for proxy in successor]  # before: the first two were gone
    assert got == [0, 1, 2, 3, 4, 5]
    assert not any(store.exists(get_key(p)) for p in first)  # acked by "b", then evicted
    successor.close()


def test_an_evicting_proxy_of_a_group_goes_once_resolved_and_acknowledged(
    conn: RedisConnection, store: RedisStore
) -> None:
    with StreamProducer[int](RedisStreamPublisher(conn), default_store=store) as producer:
        for i in range(3):
            producer.send("t", i, evict=True)
        producer.close_topics("t")
    consumer = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="a", timeout=5), timeout=5
    )
    early, late, never = consumer.next(), consumer.next(), consumer.next()
    assert early + 0 == 0  # resolved before the ack: evicted with it
    with pytest.raises(StopIteration):
        consumer.next()  # acknowledges the message
    assert not store.exists(get_key(early))
    assert store.exists(get_key(late))
    assert late + 0 == 1  # resolved after the ack: evicted at once
    assert not store.exists(get_key(late))
    assert store.exists(get_key(never))  # never resolved: left to its TTL
    elsewhere = pickle.loads(pickle.dumps(never))  # another process: ProxyStore's proxy
    assert get_factory(elsewhere).evict  # type: ignore[attr-defined]
    assert elsewhere + 0 == 2
    assert not store.exists(get_key(never))
    consumer.close()


def test_a_slow_group_member_is_told_another_member_may_have_taken_its_object(
    conn: RedisConnection, store: RedisStore
) -> None:
    with StreamProducer[int](RedisStreamPublisher(conn), default_store=store) as producer:
        for i in range(4):
            producer.send("t", i, evict=True)
        producer.close_topics("t")
    slow = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="a", count=8, timeout=5),
        timeout=5,
        prefetch_bytes=1,  # fetch one object at a time
    )
    assert slow.next_object() == 0  # every entry is now pending here, objects unread
    time.sleep(0.3)
    fast = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="b", timeout=5, claim_idle=0.2),
        timeout=5,
    )
    assert sorted(fast.iter_objects()) == [0, 1, 2, 3]  # claimed, consumed and evicted
    with pytest.raises(ObjectNotFoundError, match="In consumer group 'g', another member") as gone:
        slow.next_object()
    assert "of topic 't' is not in store" in str(gone.value)
    assert gone.value.topic == "t"
    assert "Redis lost the topic's stream" not in str(gone.value)
    # Once the member saw Redis lose the stream (a restart without persistence, which it
    # reported), that comes first: before, only the other members were suspected.
    slow.subscriber.emptied = True  # type: ignore[attr-defined]
    with pytest.raises(ObjectNotFoundError) as gone:
        slow.next_object()
    message = str(gone.value)
    assert message.index("Redis lost the topic's stream") < message.index("another member")
    fast.close()
    slow.close()

"""Producer and consumer over Redis pub/sub and durable streams, in one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import MessageLossError, ReceiveTimeout
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore, register_store, unregister_store
from framework.stream import StreamConsumer, StreamProducer


@pytest.fixture
def store(any_conn: RedisConnection) -> Iterator[RedisStore]:
    """A Redis store on the test's connection, registered so consumers find it."""
    with RedisStore("objects", connection=any_conn, ttl=600) as store:
        register_store(store)
        yield store
        unregister_store(store)


def test_store_topic_over_pubsub(any_conn: RedisConnection, store: RedisStore) -> None:
    with StreamConsumer[Any](RedisSubscriber(any_conn, "t", timeout=5)) as consumer:
        with StreamProducer[Any](RedisPublisher(any_conn), default_store=store) as producer:
            producer.send("t", np.arange(10), metadata={"i": 0})
            producer.send("t", None)
            producer.send("t", b"x" * 100_000, evict=False)
            producer.close_topics("t")
        metadata, array = consumer.next_object_with_metadata()
        assert metadata == {"i": 0}
        assert array.tolist() == list(range(10))
        assert consumer.next_object() is None
        assert consumer.next_object() == b"x" * 100_000
        assert list(consumer) == []
    assert len(list(any_conn.client.scan_iter(match=f"{any_conn.keys.prefix}:obj:*"))) == 1


def test_inline_objects_over_the_limit_are_spilled(
    any_conn: RedisConnection, store: RedisStore
) -> None:
    big = bytes(range(256)) * 400  # 100 KB
    with StreamConsumer[bytes](RedisSubscriber(any_conn, "t", timeout=5)) as consumer:
        producer = StreamProducer[bytes](RedisPublisher(any_conn), spill_store=store, batch_size=3)
        producer.send("t", b"small")
        producer.send("t", big)
        producer.send("t", b"")
        producer.close(topics=["t"])
        assert list(consumer.iter_objects()) == [b"small", big, b""]
    assert not list(any_conn.client.scan_iter(match=f"{any_conn.keys.prefix}:obj:*"))


@pytest.mark.parametrize("topic_kind", ["pubsub", "durable-group"])
def test_a_spilled_object_is_handed_over_itself_as_on_a_topic_without_a_store(
    any_conn: RedisConnection, topic_kind: str
) -> None:
    """ProxyStore's next() gives a store-less topic's object itself; a spilled one came
    as a Proxy (``json.dumps`` and ``type(x) is dict`` failed past 64 KB)."""
    big = {"data": "x" * 100_000}
    if topic_kind == "pubsub":
        sub: Any = RedisSubscriber(any_conn, "t", timeout=5)
        pub: Any = RedisPublisher(any_conn)
    else:
        sub = RedisStreamSubscriber(any_conn, "t", group="g", timeout=5)
        pub = RedisStreamPublisher(any_conn)
    with StreamConsumer[Any](sub) as consumer, StreamProducer[Any](pub) as producer:
        producer.send("t", big, metadata={"i": 0})
        producer.send("t", big, metadata={"i": 1}, evict=False)
        producer.send("t", big, metadata={"i": 2})
        producer.close_topics("t")
        first = consumer.next()
        assert type(first) is dict
        assert first == big
        assert consumer.next_with_metadata() == ({"i": 1}, big)
        assert [type(x) for x in consumer] == [dict]
    keys = list(any_conn.client.scan_iter(match="fw:obj:*"))
    assert len(keys) == 1  # evicted once handed over, except the evict=False one


def test_default_spill_store_is_rebuilt_by_the_consumer(real_conn: RedisConnection) -> None:
    big = np.ones(100_000, dtype=np.uint8)
    consumer = StreamConsumer[Any](RedisSubscriber(real_conn, "t", timeout=5))
    with StreamProducer[Any](RedisPublisher(real_conn)) as producer:
        producer.send("t", big)
        producer.close_topics("t")
    assert (consumer.next_object() == big).all()
    consumer.close(stores=True)


def test_2000_inline_objects_of_100kb_all_arrive(real_conn: RedisConnection) -> None:
    """ProxyStore loses most of these: 200 MB of events overflow the pub/sub buffer."""
    payload = b"\xab" * 100_000
    received: list[int] = []
    consumer = StreamConsumer[bytes](RedisSubscriber(real_conn, "t", timeout=30))

    def consume() -> None:
        for obj in consumer.iter_objects():
            received.append(len(obj))

    reader = threading.Thread(target=consume)
    reader.start()
    with StreamProducer[bytes](RedisPublisher(real_conn)) as producer:
        for _ in range(2000):
            producer.send("t", payload)
        producer.close_topics("t")
    reader.join(60)
    consumer.close(stores=True)
    assert received == [100_000] * 2000


def _kill_subscribers(ports: tuple[int, ...]) -> None:
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            admin.client_kill_filter(_type="pubsub")


def test_killed_subscription_mid_stream_reports_the_lost_range(redis_server: Any) -> None:
    conn = redis_server.connection()
    losses: list[MessageLossError] = []
    subscriber = RedisSubscriber(conn, "t", timeout=5)
    consumer = StreamConsumer[int](subscriber, on_loss=losses.append, timeout=1)
    producer = StreamProducer[int](RedisPublisher(conn), producer_id="p")
    for i in range(5):
        producer.send("t", i)
    assert [consumer.next_object() for _ in range(5)] == [0, 1, 2, 3, 4]
    _kill_subscribers(redis_server.ports)
    for i in range(5, 10):
        producer.send("t", i)  # published while the subscriber is cut off: lost
    with pytest.raises(ReceiveTimeout):  # reconnects, then waits: no vague report
        consumer.next_object()
    assert losses == []
    producer.send("t", 10)
    producer.close(topics=["t"])
    assert list(consumer.iter_objects()) == [10]
    assert [(e.producer, e.first, e.last, e.count, e.possible) for e in losses] == [
        ("p", 5, 9, 5, False)
    ]
    consumer.close()
    conn.close()


def test_killed_subscription_without_loss_reports_nothing(redis_server: Any) -> None:
    conn = redis_server.connection()
    consumer = StreamConsumer[int](RedisSubscriber(conn, "t"), timeout=5)
    with StreamProducer[int](RedisPublisher(conn)) as producer:
        producer.send("t", 1)
        assert consumer.next_object() == 1
        _kill_subscribers(redis_server.ports)
        with pytest.raises(ReceiveTimeout):
            consumer.next_object()  # time to resubscribe
        producer.send("t", 2)
        producer.close_topics("t")
    assert list(consumer.iter_objects()) == [2]
    consumer.close()
    conn.close()


def test_cut_off_before_the_end_is_not_silent_and_does_not_hang(redis_server: Any) -> None:
    conn = redis_server.connection()
    consumer = StreamConsumer[int](RedisSubscriber(conn, "t"), loss_grace=0.5)  # no timeout
    with StreamProducer[int](RedisPublisher(conn), producer_id="p") as producer:
        producer.send("t", 1)
        assert consumer.next_object() == 1
        _kill_subscribers(redis_server.ports)
        producer.send("t", 2)  # the rest of the stream, end included, is lost
        producer.close_topics("t")
    with pytest.raises(MessageLossError, match="Possibly lost") as info:
        consumer.next_object()
    assert (info.value.producer, info.value.first, info.value.possible) == ("p", 1, True)
    with pytest.raises(StopIteration):
        consumer.next_object()
    consumer.close()
    conn.close()


def test_durable_topic_replays_for_a_late_consumer(
    any_conn: RedisConnection, store: RedisStore
) -> None:
    with StreamProducer[int](RedisStreamPublisher(any_conn), default_store=store) as producer:
        for i in range(5):
            producer.send("t", i)
        producer.close_topics("t")
    with StreamConsumer[int](RedisStreamSubscriber(any_conn, "t", timeout=5)) as consumer:
        assert list(consumer.iter_objects()) == [0, 1, 2, 3, 4]


def test_group_members_split_the_work_and_all_end(
    any_conn: RedisConnection, store: RedisStore
) -> None:
    consumers = [
        StreamConsumer[int](
            RedisStreamSubscriber(any_conn, "t", group="g", consumer=name, count=3, timeout=10)
        )
        for name in ("a", "b")
    ]
    with StreamProducer[int](
        RedisStreamPublisher(any_conn), default_store=store, batch_size=2
    ) as producer:
        for i in range(40):
            producer.send("t", i)
        producer.close_topics("t")
    results: dict[int, list[int]] = {0: [], 1: []}

    def run(index: int) -> None:
        results[index] = list(consumers[index].iter_objects())

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results[0] + results[1]) == list(range(40))
    for consumer in consumers:
        consumer.close()
    assert not list(any_conn.client.scan_iter(match=f"{any_conn.keys.prefix}:obj:*"))


def test_dead_group_member_loses_nothing(conn: RedisConnection, store: RedisStore) -> None:
    with StreamProducer[int](
        RedisStreamPublisher(conn), default_store=store, batch_size=4
    ) as producer:
        for i in range(12):
            producer.send("t", i)
        producer.close_topics("t")
    dying = StreamConsumer[int](RedisStreamSubscriber(conn, "t", group="g", consumer="d"))
    first = [dying.next_object(), dying.next_object()]  # mid-batch: nothing acknowledged
    dying.close()  # "dies": its batch stays pending, its objects stay stored
    heir = StreamConsumer[int](
        RedisStreamSubscriber(conn, "t", group="g", consumer="h", claim_idle=0.2, timeout=10)
    )
    time.sleep(0.3)
    rest = list(heir.iter_objects())
    heir.close()
    assert first == [0, 1]
    assert sorted(rest) == list(range(12))  # at-least-once: the batch comes again, whole


@pytest.mark.parametrize(
    "options",
    [{"secret": b"k" * 32}, {"part_size": 4096}, {"serializer": "json"}],
    ids=["signed", "split", "json"],
)
def test_stores_off_the_fast_path_still_work(any_conn: RedisConnection, options: Any) -> None:
    """Signed, split or non-default stores take the Store API instead of the fused path."""
    with RedisStore("special", connection=any_conn, **options) as store:
        register_store(store)
        try:
            value = {"text": "h\u00e9llo", "blob": "x" * 10_000}
            with StreamConsumer[Any](RedisSubscriber(any_conn, "t", timeout=5)) as consumer:
                producer = StreamProducer[Any](
                    RedisPublisher(any_conn), default_store=store, batch_size=2
                )
                producer.send("t", value)
                producer.send("t", value)
                producer.send("t", value)
                producer.close(topics=["t"])
                assert list(consumer.iter_objects()) == [value] * 3
        finally:
            unregister_store(store)


def test_trimmed_durable_topic_reports_the_gap(conn: RedisConnection) -> None:
    publisher = RedisStreamPublisher(conn, maxlen=5)
    producer = StreamProducer[int](publisher, producer_id="p")
    consumer = StreamConsumer[int](RedisStreamSubscriber(conn, "t", timeout=5, count=1))
    producer.send("t", 0)
    assert consumer.next_object() == 0
    for i in range(1, 300):  # the consumer falls behind; the stream keeps about 5 entries
        producer.send("t", i)
    producer.close(topics=["t"])
    with pytest.raises(MessageLossError, match="from producer 'p'"):
        consumer.next_object()
    rest = list(consumer.iter_objects())
    assert rest[-1:] == [299]
    consumer.close()


def test_default_spill_store_works_in_process_on_fakeredis(fake_conn: RedisConnection) -> None:
    big = b"\x01" * 100_000
    # The spill store is registered while its producer is open: an injected client
    # has no URL from which a consumer could rebuild it.
    with (
        StreamConsumer[bytes](RedisSubscriber(fake_conn, "t", timeout=5)) as consumer,
        StreamProducer[bytes](RedisPublisher(fake_conn)) as producer,
    ):
        producer.send("t", big)
        producer.send("t", big, evict=False)
        producer.close_topics("t")
        assert list(consumer.iter_objects()) == [big, big]
    keys = list(fake_conn.client.scan_iter(match="fw:obj:*"))
    assert len(keys) == 1  # the evict=False one, until its spill TTL
    assert 0 < fake_conn.client.pttl(keys[0]) <= 3600 * 1000

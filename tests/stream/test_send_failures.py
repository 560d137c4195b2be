"""A bad object, a failing aggregator or a bad argument costs itself only, never its neighbours.

Each fault runs on fakeredis and on a real redis-server (the ``conn`` fixture):

* an object that cannot be serialized fails the ``send`` that offered it, and the objects
  buffered before it are published (they used to be dropped with it, silently);
* an aggregator that raises is reported once, with the batch's objects, and the producer
  goes on (it used to raise the same error at every later ``send`` and ``close``);
* a message that names no producer run is refused, not awaited forever;
* a corrupt stored object is named (key, topic, store) and left in Redis.
"""

from __future__ import annotations

import json
import queue
import re
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from framework.connection import RedisConnection
from framework.exceptions import (
    AggregationError,
    ConfigurationError,
    FramingError,
    MalformedFrameError,
    ObjectNotFoundError,
    SerializationError,
)
from framework.pubsub import (
    QueuePublisher,
    QueueSubscriber,
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import objects_and_errors

TOPIC = "t"


def _drain(conn: RedisConnection, topic: str = TOPIC) -> list[Any]:
    """Every object of a durable topic, until its end."""
    with StreamConsumer[Any](RedisStreamSubscriber(conn, topic), timeout=5) as consumer:
        return list(consumer.iter_objects())


@pytest.fixture
def store(conn: RedisConnection) -> Iterator[RedisStore]:
    """A registered store: a consumer on fakeredis cannot rebuild one from its config."""
    with RedisStore("sf", connection=conn, register=True) as store:
        yield store


def _producer(
    conn: RedisConnection, store: RedisStore | None, **kwargs: Any
) -> StreamProducer[Any]:
    stores = {TOPIC: store} if store is not None else {}
    return StreamProducer[Any](RedisStreamPublisher(conn), stores=stores, **kwargs)


# -- an object that cannot be serialized ---------------------------------------------------


@pytest.mark.parametrize("stored", [True, False], ids=["store", "inline"])
@pytest.mark.parametrize("then", ["send", "close"])
def test_an_unpicklable_object_fails_its_own_send_and_spares_the_others(
    conn: RedisConnection, store: RedisStore, stored: bool, then: str
) -> None:
    producer = _producer(conn, store if stored else None, batch_size=4)
    producer.send(TOPIC, "good-0")
    producer.send(TOPIC, "good-1")
    with pytest.raises(SerializationError, match=r"lock to topic 't'.*2 object\(s\) buffered"):
        producer.send(TOPIC, threading.Lock())
    if then == "send":
        producer.send(TOPIC, "good-3")
    producer.close(topics=[TOPIC])
    expected = ["good-0", "good-1", "good-3"] if then == "send" else ["good-0", "good-1"]
    assert _drain(conn) == expected


def test_an_unpicklable_object_spares_the_batch_a_linger_flushes(
    conn: RedisConnection, store: RedisStore
) -> None:
    producer = _producer(conn, store, batch_size=4, linger=0.05)
    producer.send(TOPIC, "good-0")
    with pytest.raises(SerializationError):
        producer.send(TOPIC, threading.Lock())
    time.sleep(0.3)  # the linger flush publishes good-0
    producer.close(topics=[TOPIC])
    assert _drain(conn) == ["good-0"]


@pytest.mark.parametrize("dtype", ["datetime64[D]", "timedelta64[s]"])
def test_a_datetime_array_is_sent_to_a_store(
    conn: RedisConnection, store: RedisStore, dtype: str
) -> None:
    """numpy refuses a buffer of these dtypes with ValueError (not TypeError).

    Sizing such an array for the prefetch budget raised it, the batch stayed buffered, and
    every later send and close of the producer raised it again.
    """
    array = np.array([1, 2], dtype=dtype)
    producer = _producer(conn, store)
    producer.send(TOPIC, 1)
    producer.send(TOPIC, array)
    producer.send(TOPIC, 2)
    producer.close(topics=[TOPIC])
    got = _drain(conn)
    assert [got[0], got[2]] == [1, 2]
    assert (got[1].dtype, list(got[1])) == (array.dtype, list(array))


def test_a_custom_serializer_failure_fails_its_own_send(conn: RedisConnection) -> None:
    def encode(obj: Any) -> bytes:
        return obj.encode()  # type: ignore[no-any-return]

    with RedisStore(
        "custom", connection=conn, serializer=encode, deserializer=bytes.decode, register=True
    ) as store:
        producer = _producer(conn, store, batch_size=3)
        producer.send(TOPIC, "a")
        with pytest.raises(SerializationError, match="custom serializer"):
            producer.send(TOPIC, 42)
        producer.close(topics=[TOPIC])
        assert _drain(conn) == ["a"]


# -- an aggregator that raises -------------------------------------------------------------


def _picky(objs: list[str]) -> str:
    if "bad" in objs:
        raise ValueError("refuses 'bad'")
    return "+".join(objs)


def test_a_failing_aggregator_is_reported_once_and_the_producer_goes_on(
    conn: RedisConnection, store: RedisStore
) -> None:
    producer = _producer(conn, store, aggregator=_picky, batch_size=2)
    producer.send(TOPIC, "a", metadata={"n": 0})
    with pytest.raises(AggregationError, match=r"_picky.*2 object\(s\) of topic 't'") as info:
        producer.send(TOPIC, "bad", metadata={"n": 1})
    assert info.value.objects == ["a", "bad"]
    assert info.value.metadata == [{"n": 0}, {"n": 1}]
    assert info.value.topic == TOPIC
    assert isinstance(info.value.__cause__, ValueError)
    for obj in ("c0", "c1", "c2"):
        producer.send(TOPIC, obj)
    producer.close(topics=[TOPIC])  # publishes c2 and ends the topic, once
    assert _drain(conn) == ["c0+c1", "c2"]


def test_a_failing_aggregator_in_a_linger_flush_is_raised_by_the_next_call(
    conn: RedisConnection, store: RedisStore
) -> None:
    producer = _producer(conn, store, aggregator=_picky, batch_size=10, linger=0.05)
    producer.send(TOPIC, "bad")
    time.sleep(0.3)
    with pytest.raises(AggregationError, match="was not accepted") as info:
        producer.send(TOPIC, "x")
    assert info.value.objects == ["bad"]
    producer.send(TOPIC, "y")
    producer.close(topics=[TOPIC])
    assert _drain(conn) == ["y"]


def test_close_ends_the_topic_and_reports_a_failing_aggregator(conn: RedisConnection) -> None:
    producer = _producer(conn, None, aggregator=_picky, batch_size=10)
    producer.send(TOPIC, "bad")
    with pytest.raises(AggregationError, match="closed all the same") as info:
        producer.close(topics=[TOPIC])
    assert info.value.objects == ["bad"]
    producer.close()  # closed: nothing left to report
    assert _drain(conn) == []  # the topic was ended: the consumer stops


# -- a message that names no producer -----------------------------------------------------


def _frame(header: dict[str, Any]) -> bytes:
    body = json.dumps({"v": 1, "signed": False, "lens": [], "h": header}).encode()
    return struct.pack(">I", len(body)) + body


def test_a_message_without_producer_is_refused_not_awaited(conn: RedisConnection) -> None:
    subscriber = RedisSubscriber(conn, TOPIC)
    conn.client.publish(conn.keys.topic(TOPIC), _frame({"topic": TOPIC}))
    with StreamProducer[Any](RedisPublisher(conn)) as producer:
        for i in range(3):
            producer.send(TOPIC, i)
        producer.close_topics(TOPIC)
    with StreamConsumer[Any](subscriber, timeout=5) as consumer:
        with pytest.raises(MalformedFrameError, match="no producer, epoch, seq"):
            consumer.next_object()
        assert list(consumer.iter_objects()) == [0, 1, 2]  # then it ends


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ({"producer": "p", "epoch": "e"}, "seq"),
        ({"producer": "", "epoch": "e", "seq": 0}, "producer"),
        ({"producer": "p", "seq": 0}, "epoch"),
    ],
)
def test_a_message_lacking_one_origin_field_is_refused(
    header: dict[str, Any], missing: str
) -> None:
    shared: queue.Queue[bytes] = queue.Queue()
    shared.put(_frame({"topic": TOPIC, **header}))
    subscriber = QueueSubscriber(shared, timeout=1, topics=[TOPIC])
    with (
        StreamConsumer[Any](subscriber) as consumer,
        pytest.raises(MalformedFrameError, match=f"has no {missing}\\."),
    ):
        consumer.next_object()


# -- a corrupt stored object ---------------------------------------------------------------


@pytest.mark.parametrize("durable", [True, False], ids=["stream", "pubsub"])
def test_a_corrupt_stored_object_is_named_and_kept(
    conn: RedisConnection, store: RedisStore, durable: bool
) -> None:
    publisher: Any = RedisStreamPublisher(conn) if durable else RedisPublisher(conn)
    subscriber: Any = (
        RedisStreamSubscriber(conn, TOPIC) if durable else RedisSubscriber(conn, TOPIC)
    )
    with StreamProducer[Any](publisher, stores={TOPIC: store}) as producer:
        producer.send(TOPIC, "first")
        producer.send(TOPIC, "second")
        producer.close_topics(TOPIC)
    keys = sorted(k.decode() for k in conn.client.keys(conn.keys.obj("*")))
    corrupt = next(k for k in keys if store.get(k) == "first")
    conn.client.set(corrupt, b"garbage!")
    with StreamConsumer[Any](subscriber, timeout=5) as consumer:
        pattern = rf"{re.escape(repr(corrupt))} of topic 't' in store 'sf'.*not a frame"
        with pytest.raises(FramingError, match=pattern):
            consumer.next_object()
        assert list(consumer.iter_objects()) == ["second"]
    assert conn.client.get(corrupt) == b"garbage!"  # kept for inspection, not evicted


def test_a_missing_object_is_a_key_error_and_a_value_error(conn: RedisConnection) -> None:
    with RedisStore("gone", connection=conn) as store:
        key = store.put("x")
        store.evict(key)
        # ProxyStore's next_object raises ValueError for a missing object; KeyError is ours.
        for kind in (ValueError, KeyError, ObjectNotFoundError):
            with pytest.raises(kind, match="evicted, expired or never written"):
                store.get(key)


# -- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stores": [object()]}, r"stores must be a mapping .* \(list\)"),
        ({"stores": {"t": 5}}, r"stores\['t'\] must be a Store .* \(int\)"),
        ({"stores": {1: None}}, r"keyed by topic"),
        ({"default_store": "x"}, r"default_store must be a Store"),
        ({"spill_store": 3}, r"spill_store must be a Store"),
        ({"filter_": 3}, r"filter_ must be a callable"),
    ],
)
def test_bad_producer_arguments_fail_at_construction(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        StreamProducer[Any](QueuePublisher({}), **kwargs)


@pytest.mark.parametrize(
    ("topic", "match"),
    [(3, r"topic must be a topic name .* \(int\)"), ([], "at least one"), (["a", 1], "got 1")],
)
def test_bad_subscriber_topics_fail_at_construction(
    fake_conn: RedisConnection, topic: Any, match: str
) -> None:
    with pytest.raises(ConfigurationError, match=match):
        RedisSubscriber(fake_conn, topic)
    with pytest.raises(ConfigurationError, match=match):
        RedisStreamSubscriber(fake_conn, topic)


@pytest.mark.parametrize("topic", [5, "", "a{b", "a}b"], ids=repr)
@pytest.mark.parametrize("batch_size", [1, 10])
def test_a_bad_topic_name_fails_its_send_and_costs_no_other_topic(
    conn: RedisConnection, topic: Any, batch_size: int
) -> None:
    """It used to be buffered (or registered) anyway, and then failed every flush and close."""
    producer = StreamProducer[Any](RedisStreamPublisher(conn), batch_size=batch_size)
    producer.send(TOPIC, "kept")
    with pytest.raises(ConfigurationError, match="topic must"):
        producer.send(topic, "refused")
    with pytest.raises(ConfigurationError, match="topic must"):
        producer.close_topics(TOPIC, topic)
    producer.close(topics=[TOPIC])
    producer.close()  # closing again is a no-op
    assert _drain(conn) == ["kept"]


@pytest.mark.parametrize("kind", ["durable", "list", "pubsub"])
def test_an_unreadable_message_is_raised_after_the_items_before_it(
    conn: RedisConnection, kind: str
) -> None:
    """Drained along with earlier messages, it used to be raised before their items."""
    subscriber: Any
    if kind == "durable":
        publisher: Any = RedisStreamPublisher(conn)
        subscriber = RedisStreamSubscriber(conn, TOPIC, timeout=5)

        def inject(data: bytes) -> None:
            conn.client.xadd(conn.keys.events(TOPIC), {"m": data})
    elif kind == "list":
        publisher, subscriber = RedisQueuePublisher(conn), RedisQueueSubscriber(conn, TOPIC)

        def inject(data: bytes) -> None:
            conn.client.rpush(conn.keys.queue(TOPIC), data)
    else:
        publisher, subscriber = RedisPublisher(conn), RedisSubscriber(conn, TOPIC, timeout=5)

        def inject(data: bytes) -> None:
            conn.client.publish(conn.keys.topic(TOPIC), data)

    with StreamConsumer[Any](subscriber, timeout=5) as consumer:
        with StreamProducer[Any](publisher) as producer:
            producer.send(TOPIC, "first")
            producer.flush()
            inject(b"\x00\x00\x00\x05{}abc")
            producer.send(TOPIC, "second")
            producer.close_topics(TOPIC)
        errors: list[Exception] = []
        assert objects_and_errors(consumer, errors) == ["first", FramingError, "second"]
    assert str(errors[0]).startswith(f"A message of topic {TOPIC!r} cannot be read: ")


@pytest.mark.parametrize(
    "timeout",
    [-1, "3", float("nan"), float("inf"), True, pytest.param(10**400, id="int-beyond-float")],
    ids=repr,
)
@pytest.mark.parametrize(
    "make", [RedisSubscriber, RedisQueueSubscriber, RedisStreamSubscriber], ids=lambda c: c.__name__
)
def test_bad_subscriber_timeouts_fail_at_the_call(
    fake_conn: RedisConnection, make: Any, timeout: Any
) -> None:
    with pytest.raises(ConfigurationError, match=f"{make.__name__}: timeout must be a number"):
        make(fake_conn, TOPIC, timeout=timeout)
    with (
        make(fake_conn, TOPIC, timeout=0) as subscriber,
        pytest.raises(ConfigurationError, match="next_message: timeout must be a number"),
    ):
        subscriber.next_message(timeout=timeout)
    with pytest.raises(ConfigurationError, match="StreamConsumer: timeout must be a number"):
        StreamConsumer[Any](QueueSubscriber(queue.Queue()), timeout=timeout)


def test_unusable_stream_arguments_fail_at_the_call() -> None:
    subscriber = QueueSubscriber(queue.Queue())
    with pytest.raises(ConfigurationError, match=r"filter_ must be a callable .* \(int\)"):
        StreamConsumer[Any](subscriber, filter_=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="subscriber must have next_message"):
        StreamConsumer[Any](None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="publisher must have send_message"):
        StreamProducer[Any](None)  # type: ignore[arg-type]
    with (
        StreamProducer[Any](QueuePublisher({TOPIC: queue.Queue()})) as producer,
        pytest.raises(ConfigurationError, match="evict must be True or False"),
    ):
        producer.send(TOPIC, "x", evict="yes")  # type: ignore[arg-type]

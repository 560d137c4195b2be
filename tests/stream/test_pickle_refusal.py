"""A consumer with ``allow_pickle=False`` unpickles nothing, whatever a message or store says.

The store config comes from the message: without a secret, anyone who can write to Redis
names a store whose serializer pickles. The consumer's refusal must hold on every read
path (batched fetches, proxies, evicting proxies of a consumer group), and a refused
object is handled as any unreadable one: reported at its turn, its message consumed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import DeserializationError
from framework.proxy import resolve
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.store import RedisStore, StoreFactory
from framework.stream import EventBatch, StreamConsumer, StreamProducer
from framework.stream.events import (
    EndOfStreamEvent,
    NewObjectKeyEvent,
    decode_message,
    encode_message,
)
from tests.stream.exploit import forged_pickle

TOPIC = "t"


@pytest.mark.integration
def test_a_forged_message_naming_a_pickling_store_unpickles_nothing(
    real_conn: RedisConnection, redis_url: str, tmp_path: Path
) -> None:
    """The reviewer's case: no secret, one message naming an "auto" store rebuilt from it."""
    conn, marker = real_conn, tmp_path / "pwned"
    with RedisConnection.from_url(redis_url) as other:  # a store nobody registered
        config = RedisStore("objs", connection=other).config()
    assert config.options["serializer"] == "auto"
    key = conn.keys.obj("ab" * 16)
    conn.client.set(key, forged_pickle(marker))
    batch = EventBatch(
        topic=TOPIC,
        producer="f" * 32,
        epoch="e",
        store_config=config.model_dump(mode="json"),
        events=[NewObjectKeyEvent(key=key, evict=True), EndOfStreamEvent()],
    )
    with RedisStreamPublisher(conn) as publisher:
        publisher.send_message(TOPIC, encode_message(batch).join())
    subscriber = RedisStreamSubscriber(conn, TOPIC, timeout=5)
    consumer = StreamConsumer[Any](subscriber, allow_pickle=False, timeout=5)
    try:
        with pytest.raises(DeserializationError) as raised:
            consumer.next_object()
        assert f"Object {key!r} of topic {TOPIC!r} in store 'objs'" in str(raised.value)
        assert "allow_pickle is False" in str(raised.value)
        with pytest.raises(StopIteration):  # a permanent failure: the message is consumed
            consumer.next_object()
    finally:
        consumer.close(stores=True)  # and the store it rebuilt from the message
    assert not marker.exists()
    assert conn.client.get(key) == forged_pickle(marker)  # left in the store, to inspect


def _read(consumer: StreamConsumer[Any], how: str) -> Any:
    if how == "next_object":
        return consumer.next_object()
    proxy = consumer.next()  # a proxy: it resolves when used
    resolve(proxy)
    return proxy


@pytest.mark.parametrize("how", ["next_object", "next"])
@pytest.mark.parametrize("durable", [True, False], ids=["stream-group", "list"])
def test_a_pickled_object_is_refused_on_every_read_path(
    conn: RedisConnection, tmp_path: Path, how: str, durable: bool
) -> None:
    """A registered store that pickles: fetched ahead, by proxy, by evicting group proxy."""
    marker = tmp_path / "pwned"
    publisher: Any = RedisStreamPublisher(conn) if durable else RedisQueuePublisher(conn)
    with RedisStore("pickling", connection=conn, register=True) as store:  # "auto": pickles
        with StreamProducer[Any](publisher, default_store=store) as producer:
            producer.send(TOPIC, {"a": 1}, evict=True)  # a dict is pickled
            producer.send(TOPIC, "text", evict=True)  # a str is not
            producer.close_topics(TOPIC)
        messages = (
            [f[b"m"] for _, f in conn.client.xrange(conn.keys.events(TOPIC))]
            if durable
            else list(conn.client.lrange(conn.keys.queue(TOPIC), 0, -1))
        )
        keys = [
            e.key
            for m in messages
            for e in decode_message(m)[0].events
            if isinstance(e, NewObjectKeyEvent)
        ]
        conn.client.set(keys[0], forged_pickle(marker))
        subscriber: Any = (
            RedisStreamSubscriber(conn, TOPIC, group="g", consumer="c", timeout=5)
            if durable
            else RedisQueueSubscriber(conn, TOPIC, timeout=5)
        )
        with StreamConsumer[Any](subscriber, allow_pickle=False, timeout=5) as consumer:
            with pytest.raises(DeserializationError, match="allow_pickle is False"):
                _read(consumer, how)
            assert _read(consumer, how) == "text"  # the stream goes on
            with pytest.raises(StopIteration):
                _read(consumer, how)
    assert not marker.exists()
    assert conn.client.get(keys[0]) == forged_pickle(marker)  # left in the store, to inspect
    if durable:  # refused for good: acknowledged, as a forged object is
        assert conn.client.xpending(conn.keys.events(TOPIC), "g")["pending"] == 0


def test_a_proxy_that_refuses_pickle_keeps_refusing_when_pickled(
    fake_conn: RedisConnection, tmp_path: Path
) -> None:
    """A proxy handed to another process carries the refusal; older pickles allow pickle."""
    marker = tmp_path / "pwned"
    with RedisStore("objs", connection=fake_conn, register=True) as store:
        key = store.put({"a": 1})
        fake_conn.client.set(key, forged_pickle(marker))
        factory = StoreFactory(key, store.config(), allow_pickle=False)
        copy = pickle.loads(pickle.dumps(factory))
        assert copy.allow_pickle is False
        with pytest.raises(DeserializationError, match="allow_pickle is False"):
            copy()
        older = StoreFactory.__new__(StoreFactory)  # pickled by a build without the field
        older.__setstate__({k: v for k, v in factory.__getstate__().items() if k != "allow_pickle"})
        assert older.allow_pickle is True
    assert not marker.exists()

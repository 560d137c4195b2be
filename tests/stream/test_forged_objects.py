"""A stored object overwritten with forged bytes costs that object only, never its neighbours.

The consumer fetches the stored objects of a batch together (one round trip); an object
that fails verification or deserialization must not take the objects fetched with it
down too (fakeredis and real Redis, durable and destructive subscribers).
"""

from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import FramingError, StoreError
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.store import RedisStore, register_store, unregister_store
from framework.store.protocols import MISSING
from framework.stream import StreamConsumer, StreamProducer
from framework.stream.events import NewObjectKeyEvent, decode_message
from tests.stream.faults import objects_and_errors

SECRET = b"s" * 32
TOPIC = "t"
PAYLOADS = [bytes([i]) * 1024 for i in range(6)]
#: The first fetch takes one object; the second the rest: forge one in its middle.
FORGED = 3


def _messages(conn: RedisConnection, durable: bool) -> list[bytes]:
    if durable:
        return [f[b"m"] for _, f in conn.client.xrange(conn.keys.events(TOPIC))]
    return list(conn.client.lrange(conn.keys.queue(TOPIC), 0, -1))


def _forge_bytes(conn: RedisConnection, key: str) -> None:
    conn.client.set(key, b"\x00\x00\x00\x02{}")  # garbage, unsigned


def _forge_hash(conn: RedisConnection, key: str) -> None:
    conn.client.delete(key)
    conn.client.hset(key, "forged", "1")  # another Redis type: every read of it errs


@pytest.mark.parametrize(
    ("forge", "error"),
    [(_forge_bytes, FramingError), (_forge_hash, StoreError)],
    ids=["bytes", "hash"],
)
@pytest.mark.parametrize("durable", [True, False], ids=["stream", "list"])
def test_a_forged_object_spoils_no_other_object_of_its_fetch(
    conn: RedisConnection, durable: bool, forge: Any, error: type[Exception]
) -> None:
    publisher: Any = RedisStreamPublisher(conn) if durable else RedisQueuePublisher(conn)
    with RedisStore("forged", connection=conn, secret=SECRET) as store:
        register_store(store)
        try:
            with StreamProducer[bytes](
                publisher, default_store=store, secret=SECRET, batch_size=len(PAYLOADS)
            ) as producer:
                for payload in PAYLOADS:
                    producer.send(TOPIC, payload)
                producer.close_topics(TOPIC)
            keys = [
                event.key
                for message in _messages(conn, durable)
                for event in decode_message(message, secret=SECRET)[0].events
                if isinstance(event, NewObjectKeyEvent)
            ]
            forge(conn, keys[FORGED])
            subscriber: Any = (
                RedisStreamSubscriber(conn, TOPIC, timeout=5)
                if durable
                else RedisQueueSubscriber(conn, TOPIC, timeout=5)
            )
            with StreamConsumer[bytes](subscriber, secret=SECRET, timeout=5) as consumer:
                got = objects_and_errors(consumer)
        finally:
            unregister_store(store)
    expected: list[Any] = list(PAYLOADS)
    assert issubclass(got[FORGED], error)  # not a frame at all, or not a value at all
    # (a non-evicting read's MGET answers nil for a key of another type: not found)
    assert got[:FORGED] + got[FORGED + 1 :] == expected[:FORGED] + expected[FORGED + 1 :]


@pytest.mark.parametrize("evict", [True, False])
def test_a_key_of_another_type_fails_alone_in_a_batch_read(
    conn: RedisConnection, evict: bool
) -> None:
    with RedisStore("wrongtype", connection=conn) as store:
        keys = [store.put(payload) for payload in PAYLOADS]
        _forge_hash(conn, keys[FORGED])
        with pytest.raises(StoreError, match="holds no object's value but another Redis type"):
            store.get(keys[FORGED])
        got = store._get_each(keys, evict=evict, deserializer=None)
        assert [g for i, g in enumerate(got) if i != FORGED] == PAYLOADS[:FORGED] + PAYLOADS[
            FORGED + 1 :
        ]
        if evict:
            assert "WRONGTYPE" in str(got[FORGED].error)
        else:  # MGET answers nil for a key of another type, as for an absent one
            assert got[FORGED] is MISSING
        assert conn.client.type(keys[FORGED]) in (b"hash", "hash")  # left to inspect
        assert all(store.exists(k) != evict for i, k in enumerate(keys) if i != FORGED)

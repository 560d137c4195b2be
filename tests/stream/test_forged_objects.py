"""A stored object overwritten with forged bytes costs that object only, never its neighbours.

The consumer fetches the stored objects of a batch together (one round trip); an object
that fails verification or deserialization must not take the objects fetched with it
down too (fakeredis and real Redis, durable and destructive subscribers).
"""

from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import FrameworkError, FramingError
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.store import RedisStore, register_store, unregister_store
from framework.stream import StreamConsumer, StreamProducer
from framework.stream.events import NewObjectKeyEvent, decode_message

SECRET = b"s" * 32
TOPIC = "t"
PAYLOADS = [bytes([i]) * 1024 for i in range(6)]
#: The first fetch takes one object; the second the rest: forge one in its middle.
FORGED = 3


def _messages(conn: RedisConnection, durable: bool) -> list[bytes]:
    if durable:
        return [f[b"m"] for _, f in conn.client.xrange(conn.keys.events(TOPIC))]
    return list(conn.client.lrange(conn.keys.queue(TOPIC), 0, -1))


@pytest.mark.parametrize("durable", [True, False], ids=["stream", "list"])
def test_a_forged_object_spoils_no_other_object_of_its_fetch(
    conn: RedisConnection, durable: bool
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
            conn.client.set(keys[FORGED], b"\x00\x00\x00\x02{}")  # garbage, unsigned
            subscriber: Any = (
                RedisStreamSubscriber(conn, TOPIC, timeout=5)
                if durable
                else RedisQueueSubscriber(conn, TOPIC, timeout=5)
            )
            got: list[Any] = []
            with StreamConsumer[bytes](subscriber, secret=SECRET, timeout=5) as consumer:
                while True:
                    try:
                        got.append(consumer.next_object())
                    except StopIteration:
                        break
                    except FrameworkError as exc:
                        got.append(type(exc))
        finally:
            unregister_store(store)
    expected: list[Any] = list(PAYLOADS)
    expected[FORGED] = FramingError  # not a frame at all
    assert got == expected

"""A consumer's ``timeout`` holds while Redis is frozen (real Redis, CLIENT PAUSE).

A frozen Redis (paused, stopped, swapping) answers nothing. A durable read or a list
pop used to wait out the socket timeout (10 s), and a reconnect's handshake again,
whatever the consumer's ``timeout``: a 3 s wait took 10-13 s. A read with a deadline
now waits for its reply at most a second past the end of its wait, and the consumer
raises ``ReceiveTimeout`` saying Redis did not answer; nothing sent meanwhile is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import ReceiveTimeout
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.stream import StreamConsumer, StreamProducer

#: Milliseconds Redis stays paused: longer than the consumer's wait and its grace.
#: (CLIENT UNPAUSE would wait in the pause too: the test waits it out.)
PAUSE_MS = 7000


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("kind", ["durable", "group", "list"])
def test_a_consumer_wait_ends_on_time_while_redis_is_frozen(
    real_conn: RedisConnection, admin: redis.Redis, kind: str
) -> None:
    topic = f"frozen-{kind}"
    if kind == "list":
        subscriber: Any = RedisQueueSubscriber(real_conn, topic)
        publisher: Any = RedisQueuePublisher(real_conn)
    else:
        group = "g" if kind == "group" else None
        subscriber = RedisStreamSubscriber(real_conn, topic, group=group)
        publisher = RedisStreamPublisher(real_conn)
    consumer = StreamConsumer[Any](subscriber, timeout=2)
    with pytest.raises(ReceiveTimeout):  # connected, and nothing there yet
        consumer.next_object()
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS)
    started = time.monotonic()
    with pytest.raises(ReceiveTimeout, match="did not answer the last read in time"):
        consumer.next_object()
    assert time.monotonic() - started < PAUSE_MS / 1000 - 2  # before: the whole pause
    time.sleep(max(0.0, started + PAUSE_MS / 1000 + 0.2 - time.monotonic()))
    producer = StreamProducer[Any](publisher)
    producer.send(topic, 1)
    producer.send(topic, 2)
    producer.close(topics=[topic])
    assert list(consumer.iter_objects()) == [1, 2]
    consumer.close()

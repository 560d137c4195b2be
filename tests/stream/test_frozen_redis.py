"""A durable consumer's ``timeout`` holds while Redis is frozen (real Redis, CLIENT PAUSE).

A frozen Redis (paused, stopped, swapping) answers nothing. A durable read used to wait
out the socket timeout (10 s) and its reconnect's handshake again, whatever the
consumer's ``timeout``: a 3 s wait took 10-13 s. A read with a deadline now waits for
its reply at most a second past the end of its BLOCK, and the consumer raises
``ReceiveTimeout`` saying Redis did not answer; nothing sent meanwhile is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import ReceiveTimeout
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.stream import StreamConsumer, StreamProducer

#: Milliseconds Redis stays paused: longer than the consumer's wait and its grace.
#: (CLIENT UNPAUSE would wait in the pause too: the test waits it out.)
PAUSE_MS = 7000


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.parametrize("group", [None, "g"], ids=["no-group", "group"])
def test_a_consumer_wait_ends_on_time_while_redis_is_frozen(
    real_conn: RedisConnection, admin: redis.Redis, group: str | None
) -> None:
    topic = f"frozen-{group}"
    consumer = StreamConsumer[Any](RedisStreamSubscriber(real_conn, topic, group=group), timeout=2)
    with pytest.raises(ReceiveTimeout):  # connected, and nothing there yet
        consumer.next_object()
    admin.execute_command("CLIENT", "PAUSE", PAUSE_MS)
    started = time.monotonic()
    with pytest.raises(ReceiveTimeout, match="did not answer the last read in time"):
        consumer.next_object()
    assert time.monotonic() - started < PAUSE_MS / 1000 - 2  # before: the whole pause
    time.sleep(max(0.0, started + PAUSE_MS / 1000 + 0.2 - time.monotonic()))
    producer = StreamProducer[Any](RedisStreamPublisher(real_conn))
    producer.send(topic, 1)
    producer.send(topic, 2)
    producer.close(topics=[topic])
    assert list(consumer.iter_objects()) == [1, 2]
    consumer.close()

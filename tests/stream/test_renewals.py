"""A producer's messages renew its records every so often, not with each message.

A watched producer's alive key and its entry in the topic's producers hash were
renewed by every message: two more commands per message for Redis and the producer.
They are now renewed at most every second (sooner for short heartbeats); heartbeats
renew them while the producer is idle.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import Collector, indexes, payload

TRANSPORTS = {
    "durable": (RedisStreamPublisher, RedisStreamSubscriber, "XADD"),
    "list": (RedisQueuePublisher, RedisQueueSubscriber, "RPUSH"),
}


def _calls(conn: RedisConnection) -> dict[str, int]:
    stats: dict[str, Any] = conn.client.info("commandstats")
    return {name.removeprefix("cmdstat_").upper(): int(s["calls"]) for name, s in stats.items()}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_busy_watched_producer_is_never_taken_for_dead(
    real_conn: RedisConnection, transport: str
) -> None:
    """Sending for longer than its alive key lives (0.6 s): renewed in time by its messages."""
    publisher, subscriber, _ = TRANSPORTS[transport]
    topic = f"busy-{transport}"
    collector = Collector(StreamConsumer[bytes](subscriber(real_conn, topic), timeout=20))
    with StreamProducer[bytes](publisher(real_conn), heartbeat=0.2) as producer:
        for index in range(150):  # about 1.5 s, no idle gap for a heartbeat to fill
            producer.send(topic, payload(index))
            time.sleep(0.01)
        producer.close_topics(topic)
    assert indexes(collector.result()) == list(range(150))
    assert collector.losses == []
    collector.consumer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_messages_renew_the_producers_records_at_most_every_second(
    real_conn: RedisConnection, transport: str
) -> None:
    publisher, _, push = TRANSPORTS[transport]
    with StreamProducer[bytes](publisher(real_conn)) as producer:  # heartbeats: 10 s
        producer.send(f"renew-{transport}", payload(0))  # registers, sets the alive key
        producer.flush()
        before = _calls(real_conn)
        for index in range(1, 201):
            producer.send(f"renew-{transport}", payload(index))
        after = _calls(real_conn)
        producer.close_topics(f"renew-{transport}")
    grew = {name: after[name] - before.get(name, 0) for name in after}
    assert grew[push] == 200
    # One renewal per elapsed second at most (before: 200 of each).
    assert grew.get("SET", 0) <= 3
    assert grew.get("HSETNX", 0) <= 3

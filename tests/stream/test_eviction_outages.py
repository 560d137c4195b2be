"""Evicting consumed objects never fails the reads that follow (real Redis).

A durable consumer evicts the objects it handed over once their message is acknowledged.
When Redis refused that eviction (a cluster node restarting), every later ``next*`` call
failed at once with "Could not evict ... objects", and ``close()`` raised it too.
"""

from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendUnavailable
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer

TOPIC = "ev"
BIG = 100_000  # above the inline limit: spilled to a store, evicted once consumed


def test_a_failed_eviction_is_retried_later_and_reads_go_on(
    real_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Real Redis: a consumer on fakeredis cannot rebuild the spill store from its config."""
    conn = real_conn
    consumer = StreamConsumer[Any](RedisStreamSubscriber(conn, TOPIC), timeout=5)
    producer = StreamProducer[Any](RedisStreamPublisher(conn))
    for i in range(6):
        producer.send(TOPIC, bytes([i]) * BIG)
    producer.close(topics=[TOPIC])
    real = RedisStore.evict_batch

    def down(self: RedisStore, keys: Any) -> None:
        raise BackendUnavailable("Redis at redis://127.0.0.1:1/0 is unreachable (test).")

    monkeypatch.setattr(RedisStore, "evict_batch", down)
    got = [obj[0] for obj in consumer.iter_objects()]  # before: BackendUnavailable
    assert got == list(range(6))
    assert "Could not evict 6 consumed object(s) from store 'fw-spill' yet" in caplog.text
    monkeypatch.setattr(RedisStore, "evict_batch", real)
    consumer.close(stores=True)
    spilled = [k for k in conn.client.keys("*") if b":obj:" in k]
    assert spilled == []  # evicted once Redis took the eviction again

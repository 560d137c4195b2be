"""A producer that ends while a subscriber checks on it is never taken for gone.

An idle subscriber reads a topic's producers hash, then checks the alive key of each
producer the hash shows open. A producer whose last message lands between the two has
deleted its key and recorded its end: it ended, it did not stop beating.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.pubsub._list_ending import ListEnding
from framework.pubsub._stream_liveness import Liveness
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import Collector, indexes, payload

KINDS = ["durable", "list"]


def _publisher(conn: RedisConnection, kind: str) -> Any:
    return RedisStreamPublisher(conn) if kind == "durable" else RedisQueuePublisher(conn)


def _liveness(conn: RedisConnection, kind: str) -> tuple[Liveness, Callable[[str], str]]:
    """The subscriber's liveness of ``kind``, and ``topic`` -> its producers hash."""
    if kind == "durable":
        return Liveness(conn), conn.keys.events_end
    return Liveness(conn, conn.keys.queue_alive, conn.keys.queue_end, "list topic"), (
        conn.keys.queue_end
    )


def _alive_key(conn: RedisConnection, kind: str, topic: str) -> str:
    return (conn.keys.events_alive if kind == "durable" else conn.keys.queue_alive)(topic, "P")


@pytest.mark.parametrize("kind", KINDS)
def test_a_producer_that_ended_after_the_hash_was_read_is_not_gone(
    any_conn: RedisConnection, kind: str
) -> None:
    topic = f"race-ended-{kind}"
    liveness, producers_key = _liveness(any_conn, kind)
    with StreamProducer[bytes](_publisher(any_conn, kind), producer_id="P", heartbeat=1) as p:
        p.send(topic, payload(0))
        p.flush()
        read = dict(any_conn.client.hgetall(producers_key(topic)))  # P open, beating
        assert any_conn.client.exists(_alive_key(any_conn, kind, topic))
        p.close_topics(topic)  # its end lands before the alive key is checked
    assert not any_conn.client.exists(_alive_key(any_conn, kind, topic))
    assert liveness.check(topic, read) == []
    assert liveness.finished_run(topic, read) is None  # what was read is not a finished run


@pytest.mark.parametrize("kind", KINDS)
def test_a_producer_whose_key_expired_is_still_gone(any_conn: RedisConnection, kind: str) -> None:
    topic = f"race-killed-{kind}"
    liveness, producers_key = _liveness(any_conn, kind)
    # Beats far apart: none renews the key while the test looks.
    with StreamProducer[bytes](_publisher(any_conn, kind), producer_id="P", heartbeat=60) as p:
        p.send(topic, payload(0))
        p.flush()
        read = dict(any_conn.client.hgetall(producers_key(topic)))
        any_conn.client.delete(_alive_key(any_conn, kind, topic))  # as if it expired
        [loss] = liveness.check(topic, read)
        assert (loss.producer, loss.gone) == ("P", True)
        assert liveness.check(topic, read) == []  # once per run


def _subscriber(conn: RedisConnection, kind: str, topic: str) -> Any:
    if kind == "durable":
        return RedisStreamSubscriber(conn, topic)  # group-less: ends at its producers' ends
    return RedisQueueSubscriber(conn, topic)


@pytest.mark.integration
@pytest.mark.parametrize("kind", KINDS)
def test_a_producer_ending_while_an_idle_consumer_checks_on_it_loses_nothing(
    redis_url: str, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race, injected: the producer ends right after the consumer read the hash."""
    topic = f"race-consumer-{kind}"
    conn = RedisConnection.from_url(redis_url)
    looked, ended = threading.Event(), threading.Event()
    collector: Collector | None = None

    def read_then_wait(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(*args: Any) -> Any:
            result = original(*args)
            if collector is not None and len(collector.objects) == 10 and not looked.is_set():
                looked.set()  # all delivered, P still open: let it end now
                assert ended.wait(10), "the producer did not end"
            return result

        return read

    if kind == "durable":
        monkeypatch.setattr(
            RedisStreamSubscriber,
            "_producers",
            read_then_wait(RedisStreamSubscriber._producers),
        )
    else:
        monkeypatch.setattr(ListEnding, "_read", read_then_wait(ListEnding._read))
    consumer = StreamConsumer[bytes](_subscriber(conn, kind, topic), timeout=20)
    producer = StreamProducer[bytes](_publisher(conn, kind), producer_id="P", heartbeat=1)
    collector = Collector(consumer)
    for index in range(10):
        producer.send(topic, payload(index))
    producer.flush()
    assert looked.wait(15), "the consumer never checked on its producers"
    producer.close(topics=[topic])
    ended.set()
    assert indexes(collector.result()) == list(range(10))
    assert collector.losses == []
    consumer.close()
    conn.close()

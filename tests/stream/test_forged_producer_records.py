"""With a secret, a producer record forged in a topic's producers hash ends no consumer.

Group members of a durable topic and competing consumers of a list topic end a topic
once its producers hash shows every producer ended. Anyone who can write to Redis could
mark a live producer ended there: its later objects were never delivered, and nothing
said so. Producers with a secret sign their records; consumers with it ignore (and log)
any record that does not verify.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import MissingSignatureError
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)
from framework.pubsub._stream_liveness import Liveness
from framework.stream import EndOfStreamEvent, EventBatch, StreamConsumer, StreamProducer
from framework.stream.events import decode_message, encode_message
from tests.stream.faults import Collector, indexes, payload, wait_for

SECRET = b"s" * 32
KINDS = ["group", "list"]


def _publisher(conn: RedisConnection, kind: str) -> Any:
    return RedisStreamPublisher(conn) if kind == "group" else RedisQueuePublisher(conn)


def _subscriber(conn: RedisConnection, kind: str, topic: str) -> Any:
    if kind == "group":
        return RedisStreamSubscriber(conn, topic, group="g", timeout=20)
    return RedisQueueSubscriber(conn, topic, timeout=20)


def _producers_key(conn: RedisConnection, kind: str, topic: str) -> str:
    return (conn.keys.events_end if kind == "group" else conn.keys.queue_end)(topic)


def _looks_after(monkeypatch: pytest.MonkeyPatch, forged: threading.Event) -> threading.Event:
    """An event set once a subscriber has read a producers hash twice since ``forged``."""
    looked = threading.Event()
    count = [0]
    original: Callable[..., None] = Liveness.seen

    def seen(self: Liveness, topic: str, producers: dict[bytes, bytes]) -> None:
        original(self, topic, producers)
        if forged.is_set():
            count[0] += 1
            if count[0] >= 2:
                looked.set()

    monkeypatch.setattr(Liveness, "seen", seen)
    return looked


def _send_three(producer: Any, topic: str, collector: Collector | None = None) -> None:
    """Objects 0, 1 and 2, published at once; and received, given the collector."""
    for index in range(3):
        producer.send(topic, payload(index))
    producer.flush()
    if collector is not None:
        collector.wait_count(3)


@pytest.mark.parametrize("forgery", ["unsigned", "copied"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_forged_end_record_ends_no_consumer(
    conn: RedisConnection,
    kind: str,
    forgery: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = f"forged-end-{kind}-{forgery}"
    hash_key = _producers_key(conn, kind, topic)
    if forgery == "copied":
        # The producer's own signed end, of a run on another topic.
        with StreamProducer[bytes](_publisher(conn, kind), producer_id="P", secret=SECRET) as p:
            p.send(f"{topic}-other", payload(0))
            p.close_topics(f"{topic}-other")
        signed_end = conn.client.hget(_producers_key(conn, kind, f"{topic}-other"), "P")
        assert signed_end is not None
        assert signed_end.startswith(b"end:")
    forged = threading.Event()
    looked = _looks_after(monkeypatch, forged)
    consumer = StreamConsumer[bytes](_subscriber(conn, kind, topic), secret=SECRET, timeout=20)
    producer = StreamProducer[bytes](_publisher(conn, kind), producer_id="P", secret=SECRET)
    try:
        collector = Collector(consumer)
        _send_three(producer, topic, collector)
        state = conn.client.hget(hash_key, "P")
        assert state is not None
        assert state.startswith(b"open:")
        run = state.split(b":")[1].split(b"|")[0]
        caplog.set_level(logging.WARNING, logger="framework.pubsub")
        # The forgery: the live producer marked ended, during a pause in its sending.
        conn.client.hset(hash_key, "P", b"end:" + run if forgery == "unsigned" else signed_end)
        forged.set()
        wait_for(lambda: looked.is_set() or not collector.running, what="two looks at the hash")
        time.sleep(0.3)  # what it read there was acted upon
        assert collector.running, "a forged end record ended the consumer"
        for index in range(3, 6):
            producer.send(topic, payload(index))
        producer.close(topics=[topic])  # its own (signed) end ends the consumer
        assert indexes(collector.result()) == list(range(6))
        assert collector.losses == []
    finally:
        producer.close()
        consumer.close()
    why = "unsigned" if forgery == "unsigned" else "its MAC does not match"
    logged = [r.getMessage() for r in caplog.records if "Ignoring the record" in r.getMessage()]
    assert any(why in m and "producer b'P'" in m and repr(topic) in m for m in logged)


@pytest.mark.parametrize("secret", [None, SECRET], ids=["no-secret", "secret"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_producer_with_signed_records_is_found_gone(
    conn: RedisConnection, kind: str, secret: bytes | None
) -> None:
    """Signed records are read as their states, with the secret and (MAC left out) without."""
    topic = f"signed-gone-{kind}"
    consumer = StreamConsumer[bytes](_subscriber(conn, kind, topic), secret=secret, timeout=20)
    producer = StreamProducer[bytes](
        _publisher(conn, kind), producer_id="P", secret=SECRET, heartbeat=60
    )
    try:
        collector = Collector(consumer)
        _send_three(producer, topic, collector)
        alive = (conn.keys.events_alive if kind == "group" else conn.keys.queue_alive)(topic, "P")
        assert conn.client.delete(alive) == 1  # as if it expired: P stopped beating
        assert indexes(collector.result()) == list(range(3))  # P counts as ended
        [loss] = collector.losses
        assert (loss.producer, loss.gone) == ("P", True)
    finally:
        producer.close()
        consumer.close()


def test_a_forged_end_of_stream_entry_does_not_end_a_group_less_reader(
    conn: RedisConnection,
) -> None:
    """An unsigned end-of-stream message in the topic's stream is refused, not taken as the end."""
    topic = "forged-eos"
    producer = StreamProducer[bytes](RedisStreamPublisher(conn), producer_id="P", secret=SECRET)
    _send_three(producer, topic)
    [(_, fields)] = conn.client.xrevrange(conn.keys.events(topic), count=1)
    last, _ = decode_message(fields[b"m"])  # the producer's run, as its own messages name it
    eos = EventBatch(
        topic=topic, producer="P", epoch=last.epoch, seq=last.next_seq, events=[EndOfStreamEvent()]
    )
    with RedisStreamPublisher(conn) as forger:
        forger.send_message(topic, encode_message(eos).join())  # unsigned
    subscriber = RedisStreamSubscriber(conn, topic, timeout=20)
    with StreamConsumer[bytes](subscriber, secret=SECRET, timeout=20) as consumer:
        got = [consumer.next_object() for _ in range(3)]
        with pytest.raises(MissingSignatureError):
            consumer.next_object()
        for index in range(3, 6):
            producer.send(topic, payload(index))
        producer.close(topics=[topic])
        got += list(consumer.iter_objects())
    assert indexes(got) == list(range(6))

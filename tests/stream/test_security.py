"""A consumer with a secret never unpickles unsigned data, whichever key or event it is in."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, MissingSignatureError, SecurityError
from framework.pubsub import QueuePublisher, RedisStreamPublisher, RedisStreamSubscriber
from framework.store import RedisStore
from framework.stream import EventBatch, NewObjectKeyEvent, StreamConsumer, StreamProducer
from framework.stream._reading import warn_pickle_trust
from framework.stream.events import encode_message
from tests.stream.exploit import forged_pickle

SECRET = b"s" * 32
TOPIC = "secure"


def _consumer(conn: RedisConnection) -> StreamConsumer[Any]:
    subscriber = RedisStreamSubscriber(conn, TOPIC, start="0", timeout=5)
    return StreamConsumer[Any](subscriber, secret=SECRET, timeout=5)


def test_forged_spilled_object_is_refused(conn: RedisConnection, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with StreamProducer[Any](RedisStreamPublisher(conn), secret=SECRET, inline_limit=16) as out:
        out.send(TOPIC, b"x" * 100)  # over the inline limit: spilled, signed
        out.flush()
        spilled = [k for k in conn.client.scan_iter("fw:obj:*")]
        assert len(spilled) == 1
        conn.client.set(spilled[0], forged_pickle(marker))
        with _consumer(conn) as consumer, pytest.raises(MissingSignatureError):
            consumer.next_object()
    assert not marker.exists()


def test_unsigned_topic_store_is_refused(conn: RedisConnection, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    store = RedisStore("plain", connection=conn)  # no secret
    with pytest.raises(ConfigurationError, match="does not sign"):
        StreamProducer[Any](RedisStreamPublisher(conn), default_store=store, secret=SECRET)
    # A producer that signs its messages but names an unsigned store (an older build).
    key = conn.keys.obj("forged")
    conn.client.set(key, forged_pickle(marker))
    batch = EventBatch(
        topic=TOPIC,
        producer="p",
        epoch="e",  # a consumer skips a message that names no producer run
        store_config=store.config().model_dump(mode="json"),
        events=[NewObjectKeyEvent(key=key)],
    )
    with RedisStreamPublisher(conn) as publisher:
        publisher.send_message(TOPIC, encode_message(batch, secret=SECRET).join())
    with _consumer(conn) as consumer, pytest.raises(MissingSignatureError, match="plain"):
        consumer.next_object()
    assert not marker.exists()
    store.close()


def test_forged_event_is_refused(conn: RedisConnection, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    forged = EventBatch(topic=TOPIC, producer="p", events=[{"type": "obj", "part": 0}])
    with RedisStreamPublisher(conn) as publisher:
        publisher.send_message(TOPIC, encode_message(forged, [forged_pickle(marker)]).join())
    with _consumer(conn) as consumer, pytest.raises(MissingSignatureError):
        consumer.next_object()
    assert not marker.exists()


def test_secret_with_an_event_level_subscriber_is_refused() -> None:
    class Events:
        def __iter__(self) -> Events:
            return self

        def __next__(self) -> EventBatch:
            raise StopIteration

        def close(self) -> None:
            pass

        def next_events(self) -> EventBatch:
            raise StopIteration

    with pytest.raises(ConfigurationError, match="event-level"):
        StreamConsumer[Any](Events(), secret=SECRET)


def test_pickle_trust_is_announced_once(caplog: pytest.LogCaptureFixture) -> None:
    warn_pickle_trust.cache_clear()
    shared: Any = __import__("queue").Queue()
    from framework.pubsub import QueueSubscriber

    with caplog.at_level(logging.WARNING, logger="framework.stream._reading"):
        for _ in range(2):
            StreamConsumer[Any](QueueSubscriber(shared, timeout=1)).close()
        StreamConsumer[Any](QueueSubscriber(shared, timeout=1), secret=SECRET).close()
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "run code" in caplog.records[0].message
    QueuePublisher({}).close()


def test_a_signed_batch_copied_from_another_topic_is_refused(conn: RedisConnection) -> None:
    """Whoever can write to Redis copies a genuine signed batch into another topic."""
    with StreamProducer[Any](RedisStreamPublisher(conn), secret=SECRET) as out:
        out.send("elsewhere", {"meant": "elsewhere"})
        out.flush()
        ((_, fields),) = conn.client.xrange(conn.keys.events("elsewhere"))
        conn.client.xadd(conn.keys.events(TOPIC), fields)
        out.send(TOPIC, {"meant": TOPIC})
        out.flush()
    with _consumer(conn) as consumer:
        with pytest.raises(SecurityError, match=r"batch of topic 'elsewhere'.*copied from another"):
            consumer.next_object()
        assert consumer.next_object() == {"meant": TOPIC}  # the genuine one is not lost

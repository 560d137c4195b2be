"""A Redis restart without persistence loses a topic's producers hash (durable and list topics).

Producers that live on record themselves again with each message and heartbeat, although
their clients reconnected without noticing the restart. A subscriber that saw the restart
trusts no end until every producer it had seen open is recorded again, or for a grace.
Before, on durable topics, the first producer to end made every group member end while
another still published: its later objects were never delivered to them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    _stream_liveness,
)
from framework.pubsub._stream_liveness import CHECK_EVERY_S
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import Collector, RedisProcess, indexes, payload

pytestmark = pytest.mark.integration

TRANSPORTS = ["durable", "list"]
#: What each transport's report of the restart says.
REPORTED = {"durable": "created again", "list": "restarted"}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisConnection]]:
    server = RedisProcess(tmp_path, aof=False).start()
    try:
        with RedisConnection.from_url(server.url) as conn:
            yield server, conn
    finally:
        server.close()


def _collector(conn: RedisConnection, transport: str, topic: str, timeout: float) -> Collector:
    if transport == "durable":
        subscriber: Any = RedisStreamSubscriber(conn, topic, group="g", consumer="c1")
    else:
        subscriber = RedisQueueSubscriber(conn, topic)
    return Collector(StreamConsumer[bytes](subscriber, timeout=timeout))


def _producer(conn: RedisConnection, transport: str, **kwargs: Any) -> StreamProducer[bytes]:
    publisher = RedisStreamPublisher if transport == "durable" else RedisQueuePublisher
    return StreamProducer[bytes](publisher(conn), **kwargs)


def _restart_unnoticed(server: RedisProcess, collector: Collector, seen: int) -> None:
    """Restart once the idle subscriber has read the producers hash."""
    collector.wait_count(seen)
    time.sleep(2 * CHECK_EVERY_S)
    server.restart()  # the producers hash is lost; the publishers' clients reconnect silently


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("heartbeat", [0.2, None], ids=["beating", "silent"])
def test_producers_recorded_again_are_waited_for_and_end_without_the_grace(
    conn: tuple[RedisProcess, RedisConnection], transport: str, heartbeat: float | None
) -> None:
    """The consumer ends once both producers are recorded again and ended: no 30 s wait."""
    server, redis_conn = conn
    topic = f"{transport}-restart"
    collector = _collector(redis_conn, transport, topic, timeout=10)  # the grace is 30 s
    kwargs = {} if heartbeat is None else {"heartbeat": heartbeat}
    with (
        _producer(redis_conn, transport, **kwargs) as a,
        _producer(redis_conn, transport, **kwargs) as b,
    ):
        a.send(topic, payload(0))
        b.send(topic, payload(100))
        a.flush()
        b.flush()
        _restart_unnoticed(server, collector, 2)
        a.send(topic, payload(1))
        a.close_topics(topic)  # before: durable group members ended here
        time.sleep(1.5)
        b.send(topic, payload(101))
        b.close_topics(topic)
    assert sorted(indexes(collector.result())) == [0, 1, 100, 101]
    assert [loss.possible for loss in collector.losses] == [True]  # the restart
    assert REPORTED[transport] in str(collector.losses[0])
    collector.consumer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_producer_that_never_records_again_is_waited_for_a_grace(
    conn: tuple[RedisProcess, RedisConnection],
    transport: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A producer open before the restart and silent after it (killed meanwhile, say)."""
    monkeypatch.setattr(_stream_liveness, "RESTART_GRACE_S", 3.0)
    server, redis_conn = conn
    topic = f"{transport}-grace"
    collector = _collector(redis_conn, transport, topic, timeout=20)
    with _producer(redis_conn, transport, heartbeat=None) as silent:
        silent.send(topic, payload(200))  # closed without ending: open
    with _producer(redis_conn, transport) as a:
        a.send(topic, payload(0))
        a.flush()
        _restart_unnoticed(server, collector, 2)
        a.send(topic, payload(1))
        a.close_topics(topic)
        ended = time.monotonic()
    assert sorted(indexes(collector.result())) == [0, 1, 200]
    assert time.monotonic() - ended >= 1.0  # not at A's end: the silent one was awaited
    assert [loss.possible for loss in collector.losses] == [True]  # the restart
    collector.consumer.close()

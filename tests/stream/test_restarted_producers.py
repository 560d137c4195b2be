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
from framework.exceptions import MessageLossError, ReceiveTimeout
from framework.pubsub import (
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    _stream_liveness,
)
from framework.pubsub._stream_liveness import CHECK_EVERY_S
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import Collector, RedisProcess, indexes, payload, retrying, wait_for

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


def _subscriber(conn: RedisConnection, transport: str, topic: str) -> Any:
    if transport == "durable":
        return RedisStreamSubscriber(conn, topic, group="g", consumer="c1")
    return RedisQueueSubscriber(conn, topic)


def _collector(
    conn: RedisConnection, transport: str, topic: str, timeout: float, secret: bytes | None = None
) -> Collector:
    subscriber = _subscriber(conn, transport, topic)
    return Collector(StreamConsumer[bytes](subscriber, timeout=timeout, secret=secret))


def _producer(conn: RedisConnection, transport: str, **kwargs: Any) -> StreamProducer[bytes]:
    publisher = RedisStreamPublisher if transport == "durable" else RedisQueuePublisher
    return StreamProducer[bytes](publisher(conn), **kwargs)


def _restart_unnoticed(server: RedisProcess, collector: Collector, seen: int) -> None:
    """Restart once the idle subscriber has read the producers hash."""
    collector.wait_count(seen)
    time.sleep(2 * CHECK_EVERY_S)
    server.restart()  # the producers hash is lost; the publishers' clients reconnect silently


@pytest.mark.parametrize("secret", [None, b"s" * 32], ids=["trusted", "signed"])
@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("heartbeat", [0.2, None], ids=["beating", "silent"])
def test_producers_recorded_again_are_waited_for_and_end_without_the_grace(
    conn: tuple[RedisProcess, RedisConnection],
    transport: str,
    heartbeat: float | None,
    secret: bytes | None,
) -> None:
    """The consumer ends once both producers are recorded again and ended: no 30 s wait.

    With a secret, the records written again are signed like the first ones.
    """
    server, redis_conn = conn
    topic = f"{transport}-restart"
    # The grace is 30 s.
    collector = _collector(redis_conn, transport, topic, timeout=10, secret=secret)
    kwargs: dict[str, Any] = {"secret": secret}
    if heartbeat is not None:
        kwargs["heartbeat"] = heartbeat
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


def _member(conn: RedisConnection, topic: str, name: str, timeout: float) -> Collector:
    subscriber = RedisStreamSubscriber(conn, topic, group="g", consumer=name)
    return Collector(StreamConsumer[bytes](subscriber, timeout=timeout))


def test_every_group_member_learns_of_the_restart_not_only_the_one_that_recreates_the_group(
    conn: tuple[RedisProcess, RedisConnection],
) -> None:
    """Before, the member that did not find the group gone trusted the emptied hash and ended."""
    server, redis_conn = conn
    members = [_member(redis_conn, "dur-members", name, timeout=20) for name in ("c1", "c2")]
    with (
        _producer(redis_conn, "durable", heartbeat=None) as a,
        _producer(redis_conn, "durable", heartbeat=None) as b,
    ):
        a.send("dur-members", payload(0))
        b.send("dur-members", payload(100))
        a.flush()
        b.flush()
        wait_for(lambda: sum(len(m.objects) for m in members) == 2, what="both objects")
        time.sleep(2 * CHECK_EVERY_S)  # the idle members read the producers hash
        server.restart()
        a.send("dur-members", payload(1))
        a.close_topics("dur-members")
        time.sleep(3 * CHECK_EVERY_S)  # before: one member ended here, B still open
        assert [m.running for m in members] == [True, True]
        b.send("dur-members", payload(101))
        b.close_topics("dur-members")
    received = sorted(index for m in members for index in indexes(m.result()))
    assert received == [0, 1, 100, 101]
    for member in members:  # each reports the restart once, in its own words
        assert [loss.possible for loss in member.losses] == [True]
        assert member.consumer.subscriber.emptied  # what a missing object's error cites
        member.consumer.close()


def test_a_member_reports_the_restart_when_another_member_recreated_the_group(
    conn: tuple[RedisProcess, RedisConnection],
) -> None:
    """Before, the entries the restart lost went unreported and the member ended early."""
    server, redis_conn = conn
    topic = "dur-hidden"
    with _producer(redis_conn, "durable", heartbeat=None) as a:
        member = StreamConsumer[bytes](
            RedisStreamSubscriber(redis_conn, topic, group="g", consumer="c1", count=10),
            timeout=20,
        )
        for index in range(50):
            a.send(topic, payload(index))
        a.flush()
        assert indexes([member.next_object()]) == [0]  # ten read, forty left in Redis
        time.sleep(2 * CHECK_EVERY_S)
        server.restart()  # the forty are lost
        RedisStreamSubscriber(redis_conn, topic, group="g", consumer="c9").close()  # new group
        collector = Collector(member)
        time.sleep(3 * CHECK_EVERY_S)  # before: the member ended here, A still open
        assert collector.running
        a.send(topic, payload(50))
        a.close_topics(topic)
    assert indexes(collector.result()) == [*range(1, 10), 50]
    assert [loss.possible for loss in collector.losses] == [True]
    assert "run id changed" in str(collector.losses[0])
    member.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_subscriber_never_idle_before_the_restart_knows_whom_to_wait_for(
    conn: tuple[RedisProcess, RedisConnection], transport: str
) -> None:
    """It reads the producers hash while taking messages, not only when idle.

    Before, a subscriber that had looked at the hash only before the first producer
    started, and was busy from its first message to the restart, knew of no producer to
    wait for and waited out the whole 30 s grace: here its 10 s timeout expired first.
    """
    server, redis_conn = conn
    topic = f"{transport}-busy"
    subscriber = _subscriber(redis_conn, transport, topic)
    with pytest.raises(ReceiveTimeout):  # it looks at the producers: none yet
        subscriber.next_message(timeout=1.5 * CHECK_EVERY_S)
    consumer = StreamConsumer[bytes](subscriber, timeout=10)
    with _producer(redis_conn, transport) as producer:
        for i in range(20):
            producer.send(topic, payload(i))
        producer.flush()
        # Every message is waiting, and the consumer takes only some: its subscriber
        # never waits for one before the restart (nor looks at the producers when idle).
        got = [consumer.next_object() for _ in range(5)]
        server.restart()
        for i in range(20, 30):
            retrying(lambda i=i: producer.send(topic, payload(i)))
        retrying(lambda: producer.close_topics(topic))
    losses: list[str] = []
    while True:
        try:
            for obj in consumer.iter_objects():
                got.append(obj)
            break
        except MessageLossError as exc:  # the restart, reported as a possible loss
            losses.append(str(exc))
    consumer.close()
    # A list consumer takes one message at a time: the 15 still waiting in the list
    # when Redis restarted without an append-only file went with it (the loss reported).
    kept = range(30) if transport != "list" else [*range(5), *range(20, 30)]
    assert sorted(set(indexes(got))) == list(kept)
    assert losses
    assert all(REPORTED[transport] in loss for loss in losses)


def test_a_member_ends_after_a_restart_that_came_after_every_producer_ended(
    conn: tuple[RedisProcess, RedisConnection],
) -> None:
    """Redis restarts without persistence while the member is still reading a topic
    whose producers have all ended. The hash, lost after their end, stays empty: the
    member waited for ever (until its timeout) instead of ending."""
    server, redis_conn = conn
    topic = "durable-ended-then-restart"
    consumer = StreamConsumer[bytes](_subscriber(redis_conn, "durable", topic), timeout=15)
    with _producer(redis_conn, "durable", heartbeat=2.0) as producer:
        for i in range(60):
            producer.send(topic, payload(i))
        producer.close_topics(topic)
    got: list[int] = []
    losses: list[MessageLossError] = []
    while True:
        try:
            got += indexes([consumer.next_object()])
        except StopIteration:
            break
        except MessageLossError as loss:
            losses.append(loss)
        if len(got) == 20 and not losses:
            server.restart()
    assert got[:20] == list(range(20))  # then what was fetched ahead; the rest was lost
    assert [loss.possible for loss in losses] == [True]
    assert "created again" in str(losses[0])
    consumer.close()

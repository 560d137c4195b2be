"""Fault injection on real Redis: nothing is lost silently, nothing hangs, no key lacks a TTL.

Durable topics (with and without a group) must deliver every object exactly as
sent (a group may deliver an object twice: at-least-once, counted); pub/sub
topics must name what was lost. Each test runs its own redis-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer
from tests.stream.faults import Collector, RedisProcess, indexes, payload, retrying, send_all

pytestmark = pytest.mark.usefixtures("require_redis_server")

MODES = ["pubsub", "durable", "group"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    with_aof = RedisProcess(tmp_path, aof=False).start()
    yield with_aof
    with_aof.close()


@pytest.fixture
def aof_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, aof=True).start()
    yield server
    server.close()


def _subscriber(conn: RedisConnection, mode: str, name: str = "c1") -> Any:
    if mode == "pubsub":
        return RedisSubscriber(conn, "t", timeout=30)
    group = "g" if mode == "group" else None
    return RedisStreamSubscriber(conn, "t", group=group, consumer=name, timeout=30, max_outage=30)


def _publisher(conn: RedisConnection, mode: str) -> Any:
    return RedisPublisher(conn) if mode == "pubsub" else RedisStreamPublisher(conn)


def _check(mode: str, collector: Collector, total: int) -> None:
    """Durable: every object, in order without a group (a group may repeat one: counted).

    Pub/sub: objects in order, and every missing one inside a reported range.
    """
    got = indexes(collector.objects)
    if mode == "group":
        assert sorted(set(got)) == list(range(total))
    elif mode == "durable":
        assert got == list(range(total))
    else:
        assert got == sorted(set(got))
        lost: set[int] = set()
        for loss in collector.losses:  # a range, or (an end possibly lost) all from first on
            assert (loss.topic, loss.producer) == ("t", "p")
            assert loss.first is not None
            last = total - 1 if loss.possible and loss.last is None else loss.last
            assert last is not None
            lost |= set(range(loss.first, last + 1))
        assert set(got) | lost == set(range(total))
        assert not set(got) & lost


def _run(
    server: RedisProcess,
    mode: str,
    total: int,
    fault: Any,
    *,
    at: int,
    size: int = 64,
    store: bool = False,
    catch_up: bool = False,
) -> Collector:
    """Stream ``total`` objects; call ``fault()`` after object ``at`` was sent."""
    conn_p, conn_c = RedisConnection.from_url(server.url), RedisConnection.from_url(server.url)
    default_store = RedisStore("faults", connection=conn_p) if store else None
    consumer = StreamConsumer[bytes](_subscriber(conn_c, mode), timeout=30, loss_grace=2)
    collector = Collector(consumer)

    def on_sent(index: int) -> None:
        if index == at:
            if catch_up:
                collector.wait_count(at + 1)
            fault()

    with StreamProducer[bytes](
        _publisher(conn_p, mode), default_store=default_store, producer_id="p"
    ) as producer:
        send_all(producer, "t", [payload(i, size) for i in range(total)], on_sent)
        retrying(lambda: producer.close_topics("t"))
    collector.result()
    collector.consumer.close(stores=True)
    conn_p.close()
    conn_c.close()
    return collector


@pytest.mark.parametrize("mode", MODES)
def test_client_kill_of_producer_and_consumer_connections(server: RedisProcess, mode: str) -> None:
    def kill() -> None:
        with server.admin() as admin:
            admin.client_kill_filter(_type="normal", skipme=True)
            if mode != "pubsub":
                return
            admin.client_kill_filter(_type="pubsub")

    collector = _run(server, mode, 40, kill, at=19, store=True, size=2048, catch_up=True)
    _check(mode, collector, 40)
    if mode != "pubsub":
        assert collector.losses == []
    assert server.keys_without_ttl() == []


@pytest.mark.parametrize("mode", MODES)
def test_restart_without_persistence(server: RedisProcess, mode: str) -> None:
    collector = _run(server, mode, 30, lambda: server.restart(0.5), at=14, catch_up=True)
    if mode == "group":  # the group vanished with the data: recreated, gap reported
        assert [(e.topic, e.possible) for e in collector.losses] == [("t", True)]
        assert "created again" in str(collector.losses[0])
        collector.losses.clear()
    _check(mode, collector, 30)
    if mode == "durable":
        assert collector.losses == []
    assert server.keys_without_ttl() == []


@pytest.mark.parametrize("mode", ["durable", "group"])
def test_restart_with_aof_loses_nothing(aof_server: RedisProcess, mode: str) -> None:
    # No catching up: entries and objects waiting in Redis survive the restart.
    collector = _run(aof_server, mode, 40, lambda: aof_server.restart(0.3), at=19, store=True)
    _check(mode, collector, 40)
    assert collector.losses == []
    assert aof_server.keys_without_ttl() == []


def test_a_group_members_ack_rides_out_a_redis_restart(aof_server: RedisProcess) -> None:
    """A slow consumer acknowledges while Redis is down: it waits, as its reads do."""
    import threading

    with RedisConnection.from_url(aof_server.url) as conn:
        with RedisStreamPublisher(conn) as pub:
            pub.send_message("t", b"0")
        member = RedisStreamSubscriber(conn, "t", group="g", timeout=5, max_outage=30)
        assert member.next_message() == b"0"
        aof_server.kill()
        restart = threading.Timer(1.0, aof_server.start)  # back in a second
        restart.start()
        try:
            member.ack_message()  # before: BackendUnavailable ... Connection refused
        finally:
            restart.join(30)
        assert conn.client.xpending("fw:events:{t}", "g")["pending"] == 0
        member.close()


@pytest.mark.parametrize("aof", [False, True], ids=["no-aof", "aof"])
def test_a_list_subscriber_hears_that_a_restart_may_have_emptied_its_list(
    tmp_path: Path, aof: bool
) -> None:
    """Lists are a competing transport (no sequence checks): the restart itself is the clue."""
    from framework.exceptions import MessageLossError
    from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber

    server = RedisProcess(tmp_path, aof=aof).start()
    try:
        with RedisConnection.from_url(server.url) as conn:
            with RedisQueuePublisher(conn) as pub:
                for i in range(3):
                    pub.send_message("t", b"%d" % i)
            sub = RedisQueueSubscriber(conn, "t", timeout=10)
            assert sub.next_message() == b"0"
            server.restart()  # the subscriber's connection drops with it
            if aof:  # the list survived: nothing to report
                assert [sub.next_message(), sub.next_message()] == [b"1", b"2"]
            else:
                with pytest.raises(MessageLossError, match="may be lost") as info:
                    sub.next_message()  # before: waited, as if nothing had been queued
                assert info.value.possible
            with RedisQueuePublisher(conn) as pub:
                pub.send_message("t", b"3")
            assert sub.next_message() == b"3"
            sub.close()
    finally:
        server.close()

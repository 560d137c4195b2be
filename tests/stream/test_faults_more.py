"""More faults on real Redis: processes killed, output-buffer cut-off, OOM, store server down."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendError, MessageLossError
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer
from tests.stream import _children
from tests.stream.faults import (
    Collector,
    RedisProcess,
    indexes,
    payload,
    retrying,
    send_all,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("require_redis_server")

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    process = RedisProcess(tmp_path).start()
    yield process
    process.close()


def _subscribed(server: RedisProcess) -> bool:
    with server.admin() as admin:
        return bool(admin.pubsub_numsub("fw:topic:{t}")[0][1])


@pytest.mark.parametrize("mode", ["pubsub", "durable"])
def test_producer_killed_and_restarted_with_the_same_id(server: RedisProcess, mode: str) -> None:
    conn = RedisConnection.from_url(server.url)
    subscriber: Any = (
        RedisSubscriber(conn, "t") if mode == "pubsub" else RedisStreamSubscriber(conn, "t")
    )
    collector = Collector(StreamConsumer[bytes](subscriber, timeout=30))
    for first, last, end in [(0, 10, False), (10, 20, True)]:
        run = SPAWN.Process(
            target=_children.produce_run, args=(server.url, mode, "t", first, last, end)
        )
        run.start()
        run.join(60)
        assert run.exitcode == (0 if end else -9)
    # The second run numbers its events from 0 again: a new run, not duplicates.
    assert indexes(collector.result()) == list(range(20))
    assert collector.losses == []
    collector.consumer.close()
    conn.close()


def test_pubsub_consumer_restarted_mid_stream_is_told_what_it_missed(
    server: RedisProcess,
) -> None:
    conn = RedisConnection.from_url(server.url)
    first = StreamConsumer[bytes](RedisSubscriber(conn, "t"), timeout=10)
    with StreamProducer[bytes](RedisPublisher(conn), producer_id="p") as producer:
        send_all(producer, "t", [payload(i) for i in range(3)], lambda i: None)
        assert indexes([first.next_object() for _ in range(2)]) == [0, 1]
        first.close()  # as if killed: its subscription is gone
        send_all(producer, "t", [payload(i) for i in range(3, 6)], lambda i: None)
        again = StreamConsumer[bytes](RedisSubscriber(conn, "t"), timeout=10)
        send_all(producer, "t", [payload(i) for i in range(6, 8)], lambda i: None)
        producer.close_topics("t")
    collector = Collector(again)
    assert indexes(collector.result()) == [6, 7]
    [loss] = collector.losses
    assert (loss.producer, loss.first, loss.last, loss.count, loss.possible) == ("p", 0, 5, 6, True)
    again.close()
    conn.close()


def test_slow_pubsub_consumer_cut_off_by_the_output_buffer_limit(server: RedisProcess) -> None:
    with server.admin() as admin:
        admin.config_set("client-output-buffer-limit", "pubsub 32kb 16kb 1")
    conn = RedisConnection.from_url(server.url)
    consumer = StreamConsumer[bytes](RedisSubscriber(conn, "t"), timeout=20, loss_grace=5)
    with StreamProducer[bytes](RedisPublisher(conn), producer_id="p") as producer:
        # The consumer does not read: once the kernel's socket buffers are full, Redis
        # cuts it off past 32 KB of queued messages.
        send_all(producer, "t", [payload(i, 8192) for i in range(2000)], lambda i: None)
        collector = Collector(consumer)  # reads what got through, then resubscribes
        wait_for(lambda: _subscribed(server) and len(collector.objects) > 0, what="resubscribe")
        send_all(producer, "t", [payload(i, 1024) for i in range(2000, 2010)], lambda i: None)
        producer.close_topics("t")
    got = indexes(collector.result())
    assert got == sorted(got)
    assert got[-10:] == list(range(2000, 2010))
    lost = set()
    for loss in collector.losses:
        assert (loss.producer, loss.possible) == ("p", False)
        assert loss.first is not None
        assert loss.last is not None
        lost |= set(range(loss.first, loss.last + 1))
    assert lost
    assert set(got) | lost == set(range(2010))
    assert not set(got) & lost
    consumer.close()
    conn.close()


def test_a_batch_past_the_output_buffer_limit_is_never_lost_silently(
    server: RedisProcess,
) -> None:
    # Redis cuts a subscriber off as soon as one message takes its output buffer past
    # the hard limit (32 MB by default). Sent as one message, this 34 MB batch (with its
    # end of stream) vanished before the consumer had met its producer: nothing could be
    # reported. In messages of about 1 MB, the first ones introduce the producer, so a
    # consumer that falls 32 MB behind is told what it missed.
    with server.admin() as admin:
        admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    conn = RedisConnection.from_url(server.url)
    consumer = StreamConsumer[bytes](RedisSubscriber(conn, "t"), timeout=30, loss_grace=3)
    collector = Collector(consumer)
    wait_for(lambda: _subscribed(server), what="subscribe")
    count = 17_000
    producer = StreamProducer[bytes](RedisPublisher(conn), producer_id="p", batch_size=count)
    with producer:
        send_all(producer, "t", [payload(i, 2048) for i in range(count)], lambda i: None)
        producer.close_topics("t")
    got = indexes(collector.result())
    assert got == sorted(set(got))
    if len(got) < count:  # this consumer fell behind: the loss is named
        assert collector.losses, f"{count - len(got)} objects missing, no loss reported"
        assert {loss.producer for loss in collector.losses} == {"p"}
    else:
        assert collector.losses == []
    consumer.close()
    conn.close()


@pytest.mark.parametrize("mode", ["pubsub", "durable"])
def test_maxmemory_noeviction_never_publishes_an_unstored_object(
    server: RedisProcess, mode: str
) -> None:
    conn = RedisConnection.from_url(server.url)
    store = RedisStore("oom", connection=conn)  # staged: stored and published atomically
    subscriber: Any = (
        RedisSubscriber(conn, "t") if mode == "pubsub" else RedisStreamSubscriber(conn, "t")
    )
    consumer = StreamConsumer[bytes](subscriber, timeout=20)
    with server.admin() as admin:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", used + 400_000)
    producer = StreamProducer[bytes](
        RedisPublisher(conn) if mode == "pubsub" else RedisStreamPublisher(conn),
        default_store=store,
        producer_id="p",
    )
    refused = None
    for index in range(100):
        try:
            producer.send("t", payload(index, 20_000))
        except BackendError as exc:
            refused = (index, exc)
            break
    assert refused is not None
    assert "maxmemory" in str(refused[1])
    with server.admin() as admin:
        admin.config_set("maxmemory", 0)
    retrying(producer.flush)  # the refused batch goes again, objects and event together
    send_all(
        producer,
        "t",
        [payload(i, 20_000) for i in range(refused[0] + 1, refused[0] + 4)],
        lambda i: None,
    )
    producer.close(topics=["t"])
    total = refused[0] + 4
    collector = Collector(consumer)
    assert indexes(collector.result()) == list(range(total))
    assert collector.losses == []
    assert server.keys_without_ttl() == []
    consumer.close(stores=True)
    store.close()
    conn.close()


def test_store_server_unreachable_for_seconds_loses_nothing(
    server: RedisProcess, tmp_path: Path
) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir()
    store_server = RedisProcess(store_dir, aof=True).start()
    conn, store_conn = (
        RedisConnection.from_url(server.url),
        RedisConnection.from_url(store_server.url),
    )
    store = RedisStore("remote", connection=store_conn)
    subscriber = RedisStreamSubscriber(conn, "t", group="g", consumer="c", timeout=30)
    collector = Collector(StreamConsumer[bytes](subscriber, timeout=30))

    def outage(index: int) -> None:
        if index == 30:
            collector.wait_count(20)
            store_server.restart(3.0)  # down for 3 s while both sides use it

    with StreamProducer[bytes](
        RedisStreamPublisher(conn), default_store=store, producer_id="p"
    ) as producer:
        send_all(producer, "t", [payload(i, 2048) for i in range(60)], outage)
        retrying(lambda: producer.close_topics("t"))
    assert sorted(set(indexes(collector.result()))) == list(range(60))
    assert collector.losses == []
    collector.consumer.close(stores=True)
    store.close()
    store_conn.close()
    conn.close()
    store_server.close()


def test_a_restart_without_persistence_under_a_groupless_reader_is_reported(
    server: RedisProcess,
) -> None:
    """The producer finished; the reader had read one object when Redis lost everything."""
    with RedisConnection.from_url(server.url) as conn:
        with StreamProducer[int](RedisStreamPublisher(conn)) as producer:
            for i in range(5):
                producer.send("t", i)
                producer.flush()
            producer.close_topics("t")
        subscriber = RedisStreamSubscriber(conn, "t", count=1)
        consumer = StreamConsumer[int](subscriber, timeout=10, loss_grace=0.5)
        with consumer:
            assert consumer.next_object() == 0
            server.restart()  # no persistence: the stream and the end-of-stream are gone
            with pytest.raises(MessageLossError, match="producer") as info:
                consumer.next_object()  # the silent producer is reported and counted ended
            assert info.value.possible
            with pytest.raises(StopIteration):
                consumer.next_object()

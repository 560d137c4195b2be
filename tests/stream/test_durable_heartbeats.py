"""Heartbeats on durable topics: a producer killed mid-stream is reported, never awaited.

A durable producer's heartbeats renew a key of its own; consumers (group-less, and every
member of a group) report a producer whose key expired before it ended its topic.
"""

from __future__ import annotations

import time

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ReceiveTimeout
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.pubsub._stream_liveness import CHECK_EVERY_S
from framework.stream import StreamConsumer, StreamProducer
from framework.stream._sequencing import SILENT_BEATS
from tests.stream import _children
from tests.stream.faults import Collector, indexes, payload


def _consumer(
    conn: RedisConnection, topic: str, group: str | None, start: str = "0", **kwargs: float
) -> Collector:
    subscriber = RedisStreamSubscriber(conn, topic, group=group, consumer="c1", start=start)
    return Collector(StreamConsumer[bytes](subscriber, **kwargs))


@pytest.mark.integration
@pytest.mark.parametrize("group", [None, "g"])
def test_a_durable_producer_killed_mid_stream_is_reported_instead_of_awaited(
    redis_url: str, group: str | None
) -> None:
    # No timeout, as ProxyStore's consumers: before, they waited forever for its end.
    # One topic per case: the server is shared, and a durable topic outlives its test.
    topic = f"dur-kill-{group}"
    conn = RedisConnection.from_url(redis_url)
    collector = _consumer(conn, topic, group)
    loss = _children.kill_a_producer(redis_url, topic, collector, durable=True)
    assert (loss.topic, loss.producer, loss.possible, loss.gone) == (topic, "P", True, True)
    assert "stopped without ending it" in str(loss)
    collector.consumer.close()
    conn.close()


@pytest.mark.parametrize("group", [None, "g"])
def test_a_live_idle_durable_producer_is_never_taken_for_dead(
    any_conn: RedisConnection, group: str | None
) -> None:
    collector = _consumer(any_conn, "dur-idle", group)
    with StreamProducer[bytes](RedisStreamPublisher(any_conn), heartbeat=0.2) as producer:
        producer.send("dur-idle", payload(0))
        time.sleep(4 * SILENT_BEATS * 0.2)  # idle far longer than its key lives
        producer.send("dur-idle", payload(1))
        producer.close_topics("dur-idle")
    assert indexes(collector.result()) == [0, 1]
    assert collector.losses == []
    # Ended: its alive key went with its last message.
    assert any_conn.client.keys(any_conn.keys.events("dur-idle") + ":alive:*") == []
    collector.consumer.close()


@pytest.mark.parametrize("heartbeat", [0.2, None])
def test_a_producer_closed_without_ending_its_topic_is_awaited_not_reported(
    conn: RedisConnection, heartbeat: float | None
) -> None:
    collector = _consumer(conn, "dur-left", None, timeout=4 * SILENT_BEATS * 0.2)
    with StreamProducer[bytes](RedisStreamPublisher(conn), heartbeat=heartbeat) as producer:
        producer.send("dur-left", payload(0))
    with pytest.raises(ReceiveTimeout):
        collector.result()
    assert indexes(collector.objects) == [0]
    assert collector.losses == []
    collector.consumer.close()


def test_an_idle_group_member_reads_the_producers_once_per_pass(
    any_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StreamProducer[bytes](RedisStreamPublisher(any_conn), heartbeat=0.2) as producer:
        producer.send("dur-once", payload(0))
        subscriber = RedisStreamSubscriber(any_conn, "dur-once", group="g", consumer="c1")
        assert subscriber.next_message(timeout=5) is not None
        passes, reads = [], []
        fill, producers = subscriber._fill_once, subscriber._producers
        monkeypatch.setattr(
            subscriber, "_fill_once", lambda ms, wait=None: (passes.append(ms), fill(ms, wait))
        )
        monkeypatch.setattr(
            subscriber, "_producers", lambda key: (reads.append(key), producers(key))[1]
        )
        time.sleep(CHECK_EVERY_S)  # the next idle pass looks at the producers' liveness
        with pytest.raises(ReceiveTimeout):
            subscriber.next_message(timeout=0.3)
        # Both the liveness look and the end check need the hash; one read serves both.
        assert passes
        assert len(reads) == len(passes)
        producer.close_topics("dur-once")
        subscriber.close()


def _run(publisher: RedisStreamPublisher, topic: str, first: int, **kwargs: float) -> None:
    producer = StreamProducer[bytes](publisher, producer_id="P", **kwargs)
    for index in range(first, first + 3):
        producer.send(topic, payload(index))
    producer.close(topics=[topic], publisher=False)


def test_one_publisher_serves_runs_of_the_same_producer_id(any_conn: RedisConnection) -> None:
    publisher = RedisStreamPublisher(any_conn)
    first = _consumer(any_conn, "dur-same", "g", timeout=20)
    _run(publisher, "dur-same", 0, heartbeat=0.5)
    assert indexes(first.result()) == [0, 1, 2]
    between = _consumer(any_conn, "dur-same", "g", timeout=20)  # waits for the next run
    _run(publisher, "dur-same", 3, heartbeat=0.5)
    assert indexes(between.result()) == [3, 4, 5]  # before: it waited out its timeout
    first.consumer.close()
    between.consumer.close()
    publisher.close()


def test_a_killed_producer_of_a_finished_run_is_forgotten_by_the_next(
    any_conn: RedisConnection,
) -> None:
    first = _consumer(any_conn, "dur-next", "g", timeout=20)
    with StreamProducer[bytes](RedisStreamPublisher(any_conn)) as producer:
        producer.send("dur-next", payload(0))
        producer.flush()
        # The state a SIGKILL leaves: open and live, its alive key expired.
        any_conn.client.hset(any_conn.keys.events_end("dur-next"), "K", "open:old:live")
        producer.close_topics("dur-next")
    assert indexes(first.result()) == [0]
    assert [loss.producer for loss in first.losses] == ["K"]
    between = _consumer(any_conn, "dur-next", "g", timeout=20)
    time.sleep(2 * CHECK_EVERY_S)  # before: it reported K again and ended here
    with StreamProducer[bytes](RedisStreamPublisher(any_conn)) as producer:
        producer.send("dur-next", payload(1))
        producer.close_topics("dur-next")
    assert indexes(between.result()) == [1]
    assert between.losses == []
    first.consumer.close()
    between.consumer.close()


@pytest.mark.parametrize("start", ["$", "0"])
def test_a_producer_killed_before_a_group_less_subscriber_came_is_its_loss_only_from_the_start(
    any_conn: RedisConnection, start: str
) -> None:
    topic = f"dur-before-{start}"
    with StreamProducer[bytes](RedisStreamPublisher(any_conn), producer_id="P") as producer:
        producer.send(topic, payload(0))
        producer.flush()
    # The state a SIGKILL leaves: open and live, its alive key expired.
    any_conn.client.hset(any_conn.keys.events_end(topic), "K", "open:old:live")
    collector = _consumer(any_conn, topic, None, start, timeout=20)
    time.sleep(2 * CHECK_EVERY_S)  # idle: it looks at its producers' liveness
    with StreamProducer[bytes](RedisStreamPublisher(any_conn), producer_id="P") as producer:
        producer.send(topic, payload(1))
        producer.close_topics(topic)
    assert indexes(collector.result()) == ([1] if start == "$" else [0, 1])
    # From "$" it asked only for what comes next: before, K was reported here as well.
    assert [loss.producer for loss in collector.losses] == ([] if start == "$" else ["K"])
    collector.consumer.close()


def test_heartbeats_go_on_while_redis_is_out_of_memory(real_conn: RedisConnection) -> None:
    """The beat renewed the alive key with SET, which a full Redis refuses: a producer that
    was alive but could not write for a while was counted gone, its later objects lost."""
    conn = real_conn
    collector = _consumer(conn, "dur-oom", "g")
    admin = conn.client
    with StreamProducer[bytes](RedisStreamPublisher(conn), heartbeat=0.2) as producer:
        producer.send("dur-oom", payload(0))
        collector.wait_count(1)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            time.sleep(3 * SILENT_BEATS * 0.2)  # several alive-key lifetimes of refused writes
        finally:
            admin.config_set("maxmemory", 0)
        producer.send("dur-oom", payload(1))
        producer.close_topics("dur-oom")
    assert indexes(collector.result()) == [0, 1]
    assert collector.losses == []
    collector.consumer.close()

"""Producer heartbeats: a consumer is told of a producer killed mid-stream, never left waiting."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, ReceiveTimeout
from framework.pubsub import (
    QueuePublisher,
    RedisPublisher,
    RedisStreamPublisher,
    RedisSubscriber,
)
from framework.store import register_store, unregister_store
from framework.stream import StreamConsumer, StreamProducer
from framework.stream._sequencing import SILENT_BEATS, Sequencer
from framework.stream.events import EventBatch, NewObjectEvent
from plugins.memory import MemoryStore
from tests.stream import _children
from tests.stream.faults import Collector, RedisProcess, indexes, payload


def _batch(seq: int, count: int, beat: float | None, producer: str = "p") -> EventBatch:
    events = [NewObjectEvent(part=0) for _ in range(count)]
    return EventBatch(topic="t", producer=producer, epoch="e", seq=seq, events=events, beat=beat)


# -- the consumer's bookkeeping (no Redis) ------------------------------------------------


def test_a_beating_producer_silent_for_a_few_beats_is_reported_and_ended() -> None:
    seq = Sequencer(complete=True)
    seq.admit(_batch(0, 3, beat=2.0), now=100.0)
    assert seq.next_check(grace=30) == 100.0 + SILENT_BEATS * 2.0
    assert seq.overdue(100.0 + SILENT_BEATS * 2.0 - 0.1, grace=30) == []
    seq.admit(_batch(3, 0, beat=2.0), now=104.0)  # a heartbeat: alive
    assert seq.overdue(107.0, grace=30) == []
    [loss] = seq.overdue(104.0 + SILENT_BEATS * 2.0, grace=30)
    assert (loss.topic, loss.producer, loss.expected, loss.possible) == ("t", "p", 3, True)
    assert "not even a heartbeat" in str(loss)
    assert "every 2.0 s" in str(loss)
    assert seq.ended("t")
    assert seq.next_check(grace=30) is None


def test_silence_counts_only_while_the_subscription_is_up() -> None:
    seq = Sequencer(complete=True)
    seq.admit(_batch(0, 1, beat=1.0), now=0.0)
    # The subscription is down (reconnecting): heartbeats cannot arrive, no verdict.
    assert seq.next_check(grace=30, listening=None) is None
    assert seq.overdue(100.0, grace=30, listening=None) == []
    # Up again since t=50: the producer has three beats from then on.
    assert seq.next_check(grace=30, listening=50.0) == 50.0 + SILENT_BEATS
    assert seq.overdue(50.0 + SILENT_BEATS - 0.1, grace=30, listening=50.0) == []
    [loss] = seq.overdue(50.0 + SILENT_BEATS, grace=30, listening=50.0)
    assert loss.producer == "p"


def test_a_heartbeat_reveals_a_lost_last_batch() -> None:
    seq = Sequencer(complete=True)
    seq.admit(_batch(0, 3, beat=2.0), now=0.0)
    events, loss = seq.admit(_batch(5, 0, beat=2.0), now=1.0)  # batch 3..4 never arrived
    assert events == []
    assert loss is not None
    assert (loss.first, loss.last, loss.possible) == (3, 4, False)


@pytest.mark.parametrize("beat", [None, 0])
def test_no_promise_or_a_goodbye_means_no_deadline(beat: float | None) -> None:
    seq = Sequencer(complete=True)
    seq.admit(_batch(0, 1, beat=2.0), now=0.0)
    seq.admit(_batch(1, 0, beat=beat), now=1.0)  # 0: closed without ending the topic
    assert seq.next_check(grace=30) is None
    assert seq.overdue(1e6, grace=30) == []
    assert not seq.ended("t")


def test_a_group_member_never_takes_missing_heartbeats_for_silence() -> None:
    seq = Sequencer(complete=False)  # members get some of the messages only
    seq.admit(_batch(0, 1, beat=1.0), now=0.0)
    assert seq.next_check(grace=30) is None
    assert seq.overdue(1e6, grace=30) == []


@pytest.mark.parametrize("bad", [0, -1.0, "10", float("nan"), True])
def test_heartbeat_must_be_a_positive_number(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="heartbeat must be a positive number"):
        StreamProducer[bytes](QueuePublisher({}), heartbeat=bad)


def test_only_pub_sub_publishers_carry_heartbeats() -> None:
    assert RedisPublisher.heartbeats is True
    assert getattr(RedisStreamPublisher, "heartbeats", False) is False


# -- on fakeredis, a real redis-server and a cluster; across processes on a real one -------


def test_a_producer_killed_mid_stream_is_reported_instead_of_awaited(redis_url: str) -> None:
    # The consumer waits without a timeout, as ProxyStore's do: before heartbeats it
    # waited forever for the end of a producer that no longer existed.
    conn = RedisConnection.from_url(redis_url)
    collector = Collector(StreamConsumer[bytes](RedisSubscriber(conn, "hb-kill")))
    loss = _children.kill_a_producer(redis_url, "hb-kill", collector)
    assert (loss.producer, loss.expected, loss.possible, loss.gone) == ("P", 5, True, True)
    collector.consumer.close()
    conn.close()


def test_a_live_idle_producer_is_never_taken_for_dead(any_conn: RedisConnection) -> None:
    conn = any_conn
    collector = Collector(StreamConsumer[bytes](RedisSubscriber(conn, "hb-idle")))
    with StreamProducer[bytes](RedisPublisher(conn), heartbeat=0.2) as producer:
        producer.send("hb-idle", payload(0))
        time.sleep(6 * SILENT_BEATS * 0.2)  # idle far longer than the consumer's patience
        producer.send("hb-idle", payload(1))
        producer.close_topics("hb-idle")
        thread = producer._beats._thread if producer._beats is not None else None
        assert thread is not None
        assert thread.name == "fw-stream-heartbeat"
        assert thread.is_alive()
    assert not thread.is_alive()  # close() stopped and joined it
    assert indexes(collector.result()) == [0, 1]
    assert collector.losses == []
    collector.consumer.close()


def test_a_producer_closed_without_ending_the_topic_is_not_reported(
    any_conn: RedisConnection,
) -> None:
    conn = any_conn
    consumer = StreamConsumer[bytes](
        RedisSubscriber(conn, "hb-close"), timeout=3 * SILENT_BEATS * 0.2
    )
    with StreamProducer[bytes](RedisPublisher(conn), heartbeat=0.2) as producer:
        producer.send("hb-close", payload(0))
    assert indexes([consumer.next_object()]) == [0]
    # Closed, not killed: it said it stops beating, so its silence is no loss.
    with pytest.raises(ReceiveTimeout):
        consumer.next_object()
    consumer.close()


class _SlowStore(MemoryStore):
    """A store whose writes take ``delay`` seconds once ``slow`` is set."""

    slow = False
    delay = 0.0

    def put_batch(self, objs: Any, **kwargs: Any) -> Any:
        if self.slow:
            time.sleep(self.delay)
        return super().put_batch(objs, **kwargs)


def test_a_producer_storing_a_slow_batch_keeps_beating(any_conn: RedisConnection) -> None:
    conn = any_conn
    # Storing a large batch can hold the producer's lock for minutes: heartbeats do
    # not wait for it, so its consumers do not take the producer for dead meanwhile.
    store = _SlowStore("hb-slow")
    register_store(store)  # the consumer finds it by name
    collector = Collector(StreamConsumer[bytes](RedisSubscriber(conn, "hb-slow")))
    with StreamProducer[bytes](
        RedisPublisher(conn), default_store=store, heartbeat=0.2
    ) as producer:
        producer.send("hb-slow", payload(0))
        store.slow, store.delay = True, 4 * SILENT_BEATS * 0.2
        producer.send("hb-slow", payload(1))
        producer.close_topics("hb-slow")
    assert indexes(collector.result()) == [0, 1]
    assert collector.losses == []
    collector.consumer.close()
    unregister_store(store)
    store.close()


def test_after_a_restart_a_heartbeat_shows_nothing_was_lost(tmp_path: Path) -> None:
    # Redis restarts while the producer is idle. The consumer resubscribes and suspects
    # the producer; without heartbeats only a later batch, or loss_grace, settled it.
    # The producer's next heartbeat carries its next number: nothing lost, nothing said.
    server = RedisProcess(tmp_path).start()
    conn = RedisConnection.from_url(server.url)
    try:
        consumer = StreamConsumer[bytes](RedisSubscriber(conn, "hb-restart"), loss_grace=30)
        collector = Collector(consumer)
        with StreamProducer[bytes](RedisPublisher(conn), heartbeat=0.2) as producer:
            producer.send("hb-restart", payload(0))
            collector.wait_count(1)
            server.restart(0.5)  # heartbeats fail meanwhile: logged, retried
            time.sleep(2.0)  # the consumer resubscribes; heartbeats resume
            assert collector.losses == []
            producer.send("hb-restart", payload(1))
            producer.close_topics("hb-restart")
        assert indexes(collector.result()) == [0, 1]
        assert collector.losses == []
        consumer.close()
    finally:
        conn.close()
        server.close()

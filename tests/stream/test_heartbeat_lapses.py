"""A producer that stalled past its consumers' patience is told, not left sending unread.

Consumers count a producer gone after three heartbeats of silence. A producer whose
process was stopped or starved for that long lives on, but what it sends next may never
be read: its next call on the topic raises ``HeartbeatLapsedError`` instead of accepting
the object, once per silence.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import HeartbeatLapsedError, MessageLossError
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.stream import StreamConsumer, StreamProducer
from framework.stream._heartbeats import Heartbeats, Lapse
from framework.stream._sequencing import SILENT_BEATS
from tests.stream import _children
from tests.stream.faults import Collector, indexes, payload, wait_for

# -- the producer's bookkeeping (no Redis) --------------------------------------------------


def test_beats_that_go_out_never_make_a_lapse() -> None:
    beats: list[tuple[str, int, bool]] = []
    hb = Heartbeats(0.05, lambda *beat: beats.append(beat), patience=0.15)
    hb.sent("t", 3, final=False)
    time.sleep(0.6)  # four times the patience, beating all along
    assert hb.lapses() == []
    assert ("t", 3, False) in beats
    hb.close()


def test_a_stalled_heartbeat_thread_makes_one_lapse_per_silence() -> None:
    release = threading.Event()
    hb = Heartbeats(0.05, lambda *beat: release.wait(10), patience=0.15)
    hb.sent("t", 3, final=False)
    hb.sent("u", 7, final=False)
    time.sleep(0.4)  # the thread hangs in its first beat: nothing is said meanwhile
    assert hb.lapses(["other"]) == []
    [lapse] = hb.lapses(["t"])
    assert (lapse.topic, lapse.next_seq) == ("t", 3)
    assert lapse.silent > 0.15
    assert hb.lapses(["t"]) == []  # once per silence
    assert [(lapse.topic, lapse.next_seq) for lapse in hb.lapses()] == [("u", 7)]
    release.set()
    hb.close()


def test_a_message_after_a_silence_notes_the_lapse() -> None:
    hb = Heartbeats(60.0, lambda *beat: None, patience=0.1)  # no beat is due in this test
    hb.sent("t", 1, final=False)
    time.sleep(0.2)
    hb.sent("t", 2, final=True)  # the last message: the topic is no longer open
    [lapse] = hb.lapses()
    assert lapse == Lapse("t", 1, lapse.silent)
    hb.close()


def test_a_lapse_found_at_close_is_kept_for_the_caller() -> None:
    hb = Heartbeats(60.0, lambda *beat: None, patience=0.1)
    hb.sent("t", 5, final=False)
    time.sleep(0.2)
    hb.close()
    assert [lapse.next_seq for lapse in hb.lapses()] == [5]


def _stalled(publisher: Any, topic: str, release: threading.Event) -> StreamProducer[bytes]:
    """A producer ``P`` that sent object 0 on ``topic``; its heartbeats hang until ``release``."""
    producer = StreamProducer[bytes](publisher, heartbeat=0.05, producer_id="P")
    producer.send(topic, payload(0))
    assert producer._beats is not None
    producer._beats._beat = lambda *beat: release.wait(10)
    time.sleep(0.1 + SILENT_BEATS * 0.05 * 2)  # twice the consumers' patience
    return producer


def test_the_producer_raises_once_and_keeps_the_object_out(any_conn: RedisConnection) -> None:
    release = threading.Event()
    consumer = StreamConsumer[bytes](RedisSubscriber(any_conn, "lapse-send"), timeout=10)
    producer = _stalled(RedisPublisher(any_conn), "lapse-send", release)
    with pytest.raises(HeartbeatLapsedError) as caught:
        producer.send("lapse-send", payload(1))
    error = caught.value
    assert isinstance(error, MessageLossError)
    assert (error.topic, error.producer, error.expected) == ("lapse-send", "P", 1)
    assert (error.possible, error.gone) == (True, True)
    assert error.patience == pytest.approx(SILENT_BEATS * 0.05)
    assert "from sequence 1 on may never be read" in str(error)
    assert "The object was not accepted" in str(error)
    release.set()
    producer.send("lapse-send", payload(1))  # reported once: accepted now
    producer.close(topics=["lapse-send"])
    assert indexes([consumer.next_object() for _ in range(2)]) == [0, 1]
    consumer.close()


def test_close_reports_a_lapse_after_closing(any_conn: RedisConnection) -> None:
    release = threading.Event()
    producer = _stalled(RedisPublisher(any_conn), "lapse-close", release)
    release.set()  # the hung heartbeat goes out at last: heard, but too late
    with pytest.raises(HeartbeatLapsedError, match="The producer is closed all the same"):
        producer.close()
    assert producer._released
    producer.close()  # closed: nothing more to say


# -- a real stall: the producer's process is stopped (SIGSTOP) on a real redis-server --------


@pytest.mark.integration
@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_a_producer_stopped_past_its_consumers_patience_is_told(
    redis_url: str, durable: bool
) -> None:
    topic = f"lapse-stop-{durable}"
    conn = RedisConnection.from_url(redis_url)
    subscriber = RedisStreamSubscriber(conn, topic) if durable else RedisSubscriber(conn, topic)
    collector = Collector(StreamConsumer[bytes](subscriber))
    spawn = multiprocessing.get_context("spawn")
    ready, go, results = spawn.Event(), spawn.Event(), spawn.Queue()
    child = spawn.Process(
        target=_children.produce_across_a_stall,
        args=(redis_url, topic, durable, ready, go, results),
    )
    child.start()
    try:
        assert ready.wait(60)
        collector.wait_count(1)
        os.kill(child.pid, signal.SIGSTOP)  # every thread of the producer stops
        stopped = time.monotonic()
        wait_for(lambda: collector.losses, what="the consumer to report the producer gone")
        time.sleep(max(0.0, stopped + 1.5 - time.monotonic()))
    finally:
        os.kill(child.pid, signal.SIGCONT)
    go.set()
    topic_, producer, expected, silent, patience, text = results.get(timeout=60)
    assert (topic_, producer, expected) == (topic, "P", 1)
    assert silent >= 1.5
    assert patience == pytest.approx(SILENT_BEATS * 0.2)
    assert "stopped or starved" in text
    assert results.get(timeout=60) == "sent"
    assert results.get(timeout=60) == "closed"
    child.join(60)
    assert child.exitcode == 0
    # What the consumer said: the producer's silence, as a possible loss from 1 on.
    assert indexes(collector.result())[:1] == [0]
    loss = collector.losses[0]
    assert (loss.producer, loss.possible, loss.gone) == ("P", True, True)
    collector.consumer.close()
    conn.close()


def test_a_durable_producer_raises_too(any_conn: RedisConnection) -> None:
    release = threading.Event()
    producer = _stalled(RedisStreamPublisher(any_conn), "lapse-durable", release)
    with pytest.raises(HeartbeatLapsedError, match="Nothing was flushed"):
        producer.flush()
    release.set()
    producer.close(topics=["lapse-durable"])

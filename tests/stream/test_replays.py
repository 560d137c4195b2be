"""A replayed message of an earlier run is ignored, never taken for a producer restart.

Anyone who can write to Redis can publish a signed message of a producer's earlier run
again. Before runs were ordered, a consumer following the producer's current run took
such a message for a restart: it delivered the old objects again, and then reported a
loss that never happened when the current run went on.
"""

from __future__ import annotations

import time

import pytest

from framework.connection import RedisConnection
from framework.pubsub import RedisPublisher, RedisSubscriber
from framework.stream import StreamConsumer, StreamProducer
from framework.stream._sequencing import Sequencer
from framework.stream.events import EventBatch, NewObjectEvent, epoch_started, new_epoch
from tests.stream.faults import Collector, indexes, payload

SECRET = b"k" * 32


def _batch(epoch: str, seq: int, count: int = 1) -> EventBatch:
    events = [NewObjectEvent(part=0) for _ in range(count)]
    return EventBatch(topic="t", producer="p", epoch=epoch, seq=seq, events=events)


def test_a_run_id_says_when_the_run_started() -> None:
    before = time.time_ns() // 1_000_000
    epoch = new_epoch()
    started = epoch_started(epoch)
    assert started is not None
    assert before <= started <= time.time_ns() // 1_000_000
    assert new_epoch() != new_epoch()
    # Run ids of earlier versions (random hex) and anything else say nothing.
    assert [epoch_started(e) for e in ("0123456789ab", "", "-ab", "zz-ab")] == [None] * 4


def test_a_batch_of_an_earlier_run_is_ignored_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    old, new = "100-aaaaaaaa", "200-bbbbbbbb"
    sequencer = Sequencer(complete=True)
    assert sequencer.admit(_batch(old, 0, 2)) == ([NewObjectEvent(part=0)] * 2, None)
    events, loss = sequencer.admit(_batch(new, 0))  # a restart
    assert (len(events), loss) == (1, None)
    assert sequencer.admit(_batch(old, 1, 3)) == ([], None)  # replayed
    assert "a replayed message?" in caplog.text
    events, loss = sequencer.admit(_batch(new, 1))  # the current run goes on: no gap
    assert (len(events), loss) == (1, None)


def test_run_ids_that_say_no_time_still_switch_runs() -> None:
    sequencer = Sequencer(complete=True)
    sequencer.admit(_batch("200-bbbbbbbb", 0))
    events, loss = sequencer.admit(_batch("0123456789ab", 0))  # an older producer's restart
    assert (len(events), loss) == (1, None)


@pytest.mark.integration
def test_a_signed_message_of_an_earlier_run_published_again_is_ignored(redis_url: str) -> None:
    conn = RedisConnection.from_url(redis_url)
    channel = conn.keys.topic("replay")
    tap = conn.client.pubsub()  # what anyone allowed to subscribe sees
    tap.subscribe(channel)
    assert tap.get_message(timeout=5)["type"] == "subscribe"
    collector = Collector(StreamConsumer[bytes](RedisSubscriber(conn, "replay"), secret=SECRET))
    first = StreamProducer[bytes](RedisPublisher(conn), producer_id="P", secret=SECRET)
    first.send("replay", payload(0))
    captured = tap.get_message(timeout=5)
    assert captured is not None
    assert captured["type"] == "message"
    first.close()  # closed without ending the topic; the same producer starts again
    time.sleep(0.01)  # a later millisecond: a later run
    second = StreamProducer[bytes](RedisPublisher(conn), producer_id="P", secret=SECRET)
    second.send("replay", payload(1))
    collector.wait_count(2)
    conn.client.publish(channel, captured["data"])  # the replay
    second.send("replay", payload(2))
    second.close(topics=["replay"])
    assert indexes(collector.result()) == [0, 1, 2]
    assert collector.losses == []
    tap.close()
    collector.consumer.close()
    conn.close()

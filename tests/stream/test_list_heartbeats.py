"""Object streams over list topics: every competing consumer ends, a killed producer is reported.

Each message of a list topic goes to one subscriber, the end of the stream included, so
the producers record themselves in the topic's producers hash and keep alive keys while
they beat. Before, a consumer that did not get the end waited forever, and so did every
consumer of a producer that was killed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import BackendUnavailable, ConfigurationError, ReceiveTimeout
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber
from framework.pubsub._stream_liveness import CHECK_EVERY_S
from framework.stream import StreamConsumer, StreamProducer
from framework.stream._sequencing import SILENT_BEATS
from tests.cli.conftest import acl_user
from tests.stream import _children
from tests.stream.faults import Collector, indexes, payload


def _collector(conn: RedisConnection, topic: str, **kwargs: float) -> Collector:
    return Collector(StreamConsumer[bytes](RedisQueueSubscriber(conn, topic), **kwargs))


def _produce(conn: RedisConnection, topic: str, first: int, last: int, **kwargs: float) -> None:
    with StreamProducer[bytes](RedisQueuePublisher(conn), batch_size=3, **kwargs) as producer:
        for index in range(first, last):
            producer.send(topic, payload(index))
        producer.close_topics(topic)


def test_every_competing_consumer_ends_when_the_producer_ends(any_conn: RedisConnection) -> None:
    # A timeout only so that the old behaviour fails instead of hanging: one of them
    # did not get the end of the stream and waited for it.
    collectors = [_collector(any_conn, "q-end", timeout=20) for _ in range(3)]
    _produce(any_conn, "q-end", 0, 30)
    got = sorted(i for c in collectors for i in indexes(c.result()))
    assert got == list(range(30))
    assert all(c.losses == [] for c in collectors)
    for collector in collectors:
        collector.consumer.close()


def test_consumers_wait_for_every_producer_of_the_run(any_conn: RedisConnection) -> None:
    collectors = [_collector(any_conn, "q-two", timeout=20) for _ in range(2)]
    with StreamProducer[bytes](RedisQueuePublisher(any_conn)) as late:
        late.send("q-two", payload(100))
        late.flush()
        _produce(any_conn, "q-two", 0, 10)  # ends first: the topic is not over yet
        time.sleep(2 * CHECK_EVERY_S)
        assert all(c._thread.is_alive() for c in collectors)  # still waiting for `late`
        late.send("q-two", payload(101))
        late.close_topics("q-two")
    got = sorted(i for c in collectors for i in indexes(c.result()))
    assert got == [*range(10), 100, 101]
    for collector in collectors:
        collector.consumer.close()


def test_a_subscriber_opened_after_a_finished_run_waits_for_the_next(
    any_conn: RedisConnection,
) -> None:
    first = _collector(any_conn, "q-runs", timeout=20)
    _produce(any_conn, "q-runs", 0, 5)
    assert indexes(first.result()) == list(range(5))
    first.consumer.close()
    subscriber = RedisQueueSubscriber(any_conn, "q-runs")
    with StreamConsumer[bytes](subscriber, timeout=2 * CHECK_EVERY_S + 0.5) as late:
        with pytest.raises(ReceiveTimeout):  # not ended at once: the run was not its own
            late.next_object()
        thread = threading.Thread(target=_produce, args=(any_conn, "q-runs", 5, 8))
        thread.start()
        assert [int.from_bytes(o[:4], "big") for o in late.iter_objects()] == [5, 6, 7]
        thread.join()


@pytest.mark.integration
def test_a_list_producer_killed_mid_stream_is_reported_instead_of_awaited(redis_url: str) -> None:
    # No timeout, as ProxyStore's consumers: before, this waited forever for its end.
    conn = RedisConnection.from_url(redis_url)
    collector = _collector(conn, "q-kill")
    loss = _children.kill_a_producer(redis_url, "q-kill", collector, queue=True)
    assert (loss.topic, loss.producer, loss.possible, loss.gone) == ("q-kill", "P", True, True)
    assert "list topic 'q-kill' stopped without ending it" in str(loss)
    collector.consumer.close()
    conn.close()


def test_a_live_idle_list_producer_is_never_taken_for_dead(any_conn: RedisConnection) -> None:
    collector = _collector(any_conn, "q-idle")
    with StreamProducer[bytes](RedisQueuePublisher(any_conn), heartbeat=0.2) as producer:
        producer.send("q-idle", payload(0))
        time.sleep(4 * SILENT_BEATS * 0.2)  # idle far longer than its key lives
        producer.send("q-idle", payload(1))
        producer.close_topics("q-idle")
    assert indexes(collector.result()) == [0, 1]
    assert collector.losses == []
    # Ended: its alive key went with its last message; the producers hash has a TTL.
    assert any_conn.client.keys(any_conn.keys.queue("q-idle") + ":alive:*") == []
    assert any_conn.client.ttl(any_conn.keys.queue_end("q-idle")) > 0
    collector.consumer.close()


def test_a_list_producer_closed_without_ending_is_awaited_not_reported(
    any_conn: RedisConnection,
) -> None:
    collector = _collector(any_conn, "q-left", timeout=4 * SILENT_BEATS * 0.2)
    with StreamProducer[bytes](RedisQueuePublisher(any_conn), heartbeat=0.2) as producer:
        producer.send("q-left", payload(0))
    with pytest.raises(ReceiveTimeout):
        collector.result()
    assert indexes(collector.objects) == [0]
    assert collector.losses == []
    collector.consumer.close()


def test_a_forged_live_producer_entry_is_reported_gone_not_a_crash(
    any_conn: RedisConnection,
) -> None:
    collector = _collector(any_conn, "q-forged", timeout=20)
    ends = any_conn.keys.queue_end("q-forged")
    with StreamProducer[bytes](RedisQueuePublisher(any_conn)) as producer:
        producer.send("q-forged", payload(0))
        producer.flush()  # registered: the run is on
        any_conn.client.hset(ends, mapping={"{bad}": "open:x:live", "ghost": "open:y:live"})
        producer.close_topics("q-forged")
    assert indexes(collector.result()) == [0]
    assert sorted(loss.producer for loss in collector.losses) == ["ghost", "{bad}"]
    collector.consumer.close()


def test_a_killed_producer_of_a_finished_run_is_forgotten_by_the_next(
    any_conn: RedisConnection,
) -> None:
    # The state a SIGKILL leaves: open and live, its alive key expired.
    any_conn.client.hset(any_conn.keys.queue_end("q-next"), "K", "open:old:live")
    collector = _collector(any_conn, "q-next", timeout=20)  # opened between the runs
    time.sleep(2 * CHECK_EVERY_S)  # before: it reported K and ended here
    _produce(any_conn, "q-next", 0, 4)
    assert indexes(collector.result()) == [0, 1, 2, 3]
    assert collector.losses == []
    assert len(any_conn.client.hkeys(any_conn.keys.queue_end("q-next"))) == 1  # K is gone
    collector.consumer.close()


def test_plain_list_messages_without_producers_never_end_the_subscriber(
    any_conn: RedisConnection,
) -> None:
    with RedisQueuePublisher(any_conn) as publisher:
        publisher.send_message("q-plain", b"one")
    with RedisQueueSubscriber(any_conn, "q-plain", timeout=2 * CHECK_EVERY_S + 0.5) as sub:
        assert sub.next_message() == b"one"
        with pytest.raises(ReceiveTimeout):
            sub.next_message()
    assert not any_conn.client.exists(any_conn.keys.queue_end("q-plain"))


def test_a_list_producer_registers_once_per_topic_and_run(any_conn: RedisConnection) -> None:
    with StreamProducer[bytes](RedisQueuePublisher(any_conn), heartbeat=5.0) as producer:
        producer.send("q-reg", payload(0))
        producer.flush()
        [state] = any_conn.client.hvals(any_conn.keys.queue_end("q-reg"))
        assert state.startswith(b"open:")
        assert state.endswith(b":live")
        producer.close_topics("q-reg")
    [state] = any_conn.client.hvals(any_conn.keys.queue_end("q-reg"))
    assert state.startswith(b"end:")


class _Unrecorded:
    """Pushes to a list topic without recording its producer (as earlier versions did)."""

    def __init__(self, conn: RedisConnection) -> None:
        self._publisher = RedisQueuePublisher(conn)

    def send_message(self, topic: str, message: bytes) -> None:
        self._publisher.send_message(topic, message)

    def close(self) -> None:
        self._publisher.close()


def test_a_consumer_of_unrecorded_producers_ends_at_their_end(any_conn: RedisConnection) -> None:
    collector = _collector(any_conn, "q-unrecorded", timeout=20)
    with StreamProducer[bytes](_Unrecorded(any_conn)) as producer:
        for index in range(3):
            producer.send("q-unrecorded", payload(index))
        producer.close_topics("q-unrecorded")
    assert indexes(collector.result()) == [0, 1, 2]
    assert not any_conn.client.exists(any_conn.keys.queue_end("q-unrecorded"))
    collector.consumer.close()


def test_one_publisher_serves_runs_of_the_same_producer_id(any_conn: RedisConnection) -> None:
    publisher = RedisQueuePublisher(any_conn)
    for first in (0, 3):  # two runs, a consumer opened between them
        collector = _collector(any_conn, "q-same", timeout=20)
        producer = StreamProducer[bytes](publisher, producer_id="P", heartbeat=0.5)
        for index in range(first, first + 3):
            producer.send("q-same", payload(index))
        producer.close(topics=["q-same"], publisher=False)
        assert indexes(collector.result()) == list(range(first, first + 3))
        collector.consumer.close()
    publisher.close()


def test_a_message_whose_pop_reply_was_lost_keeps_the_topic_open(
    any_conn: RedisConnection,
) -> None:
    any_conn.client.hset(any_conn.keys.queue_end("q-lost"), "A", "end:run")  # all ended
    with RedisQueuePublisher(any_conn) as publisher:
        publisher.send_message("q-lost", b"last")
    subscriber = RedisQueueSubscriber(any_conn, "q-lost", timeout=5)
    taker: Any = subscriber._taker
    send = taker._send

    def reply_lost(pop: Any, wait: float | None, reply_within: float | None = None) -> Any:
        send(pop, wait, reply_within)  # the message moves into the taken key...
        raise redis.exceptions.ConnectionError("reply lost")  # ...and its reply is lost

    taker._send = reply_lost
    with pytest.raises(BackendUnavailable):
        subscriber.poll_message()
    taker._send = send
    assert any_conn.client.llen(any_conn.keys.queue("q-lost")) == 0
    assert subscriber.topic_ended() is False  # before: True, with "last" unread
    assert subscriber.next_message() == b"last"
    subscriber.close()


@pytest.mark.integration
def test_a_subscriber_without_permission_for_the_producers_hash_just_pops(
    real_conn: RedisConnection,
) -> None:
    admin = real_conn.client
    port = admin.connection_pool.connection_kwargs["port"]
    commands = ["+@list", "+info", "+ping", "+del", "+expire", "+client", "+hello", "+select"]
    with acl_user(admin, port, "lister", *commands) as url, RedisConnection.from_url(url) as conn:
        with RedisQueuePublisher(real_conn) as publisher:
            publisher.send_message("q-acl", b"one")
        with RedisQueueSubscriber(conn, "q-acl", timeout=2 * CHECK_EVERY_S + 0.5) as subscriber:
            assert subscriber.next_message() == b"one"
            with pytest.raises(ReceiveTimeout):  # before: PermissionDenied every second
                subscriber.next_message()


def test_a_producer_id_that_cannot_name_a_key_fails_at_construction(
    any_conn: RedisConnection,
) -> None:
    with pytest.raises(ConfigurationError, match="producer id"):
        StreamProducer[bytes](RedisQueuePublisher(any_conn), producer_id="a{b}", heartbeat=1.0)

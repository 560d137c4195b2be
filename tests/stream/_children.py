"""Producer and consumer processes for the cross-process tests (spawn imports this by name)."""

from __future__ import annotations

import time
from typing import Any

from framework.connection import RedisConnection
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer


def payload(index: int, size: int) -> bytes:
    """``size`` bytes that start with ``index``."""
    return index.to_bytes(4, "big") + b"\x5a" * max(0, size - 4)


def produce(url: str, mode: str, topic: str, sizes: list[int], batch_size: int) -> None:
    """Send one object per size (stored for durable topics, inline for pub/sub), then end."""
    with RedisConnection.from_url(url) as conn:
        if mode == "pubsub":
            publisher: Any = RedisPublisher(conn)
            store = None
        else:
            publisher = RedisStreamPublisher(conn)
            store = RedisStore("xproc", connection=conn, ttl=600)
        with StreamProducer[bytes](publisher, default_store=store, batch_size=batch_size) as out:
            for index, size in enumerate(sizes):
                out.send(topic, payload(index, size))
            out.close_topics(topic)


def consume(
    url: str,
    mode: str,
    topic: str,
    ready: Any,
    results: Any,
    group: str | None = None,
    name: str | None = None,
    record: str | None = None,
    pause: float = 0.0,
) -> None:
    """Put the indexes of every object received (until the topic ends) on ``results``.

    With ``record``, each index is also pushed to that Redis list as soon as it has been
    processed, so the parent can see progress and kill this process mid-stream.
    """
    with RedisConnection.from_url(url) as conn:
        if mode == "pubsub":
            subscriber: Any = RedisSubscriber(conn, topic, timeout=60)
        else:
            subscriber = RedisStreamSubscriber(
                conn, topic, group=group, consumer=name, count=4, claim_idle=0.5, timeout=60
            )
        got = []
        with StreamConsumer[bytes](subscriber) as consumer:
            ready.set()
            for obj in consumer.iter_objects():
                index = int.from_bytes(obj[:4], "big")
                got.append((index, len(obj)))
                if record is not None:
                    conn.client.rpush(record, index)
                time.sleep(pause)
            consumer.close(stores=True)
    results.put(got)


def produce_run(url: str, mode: str, topic: str, first: int, last: int, end: bool) -> None:
    """Send objects ``first..last-1`` as producer ``P``; end the topic, or die by SIGKILL."""
    import os
    import signal

    with RedisConnection.from_url(url) as conn:
        publisher: Any = RedisPublisher(conn) if mode == "pubsub" else RedisStreamPublisher(conn)
        producer = StreamProducer[bytes](publisher, producer_id="P")
        for index in range(first, last):
            producer.send(topic, payload(index, 64))
        if end:
            producer.close(topics=[topic])
            return
        producer.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # no close, no end of stream


def produce_then_die(
    url: str, topic: str, count: int, heartbeat: float, durable: bool = False, queue: bool = False
) -> None:
    """Send ``count`` objects as producer ``P`` (pub/sub, durable or list), then die by SIGKILL."""
    import os
    import signal

    from framework.pubsub import RedisQueuePublisher

    conn = RedisConnection.from_url(url)
    publisher: Any = RedisStreamPublisher(conn) if durable else RedisPublisher(conn)
    if queue:
        publisher = RedisQueuePublisher(conn)
    producer = StreamProducer[bytes](publisher, producer_id="P", heartbeat=heartbeat)
    for index in range(count):
        producer.send(topic, payload(index, 16))
    time.sleep(3 * heartbeat)  # heartbeats go out meanwhile
    os.kill(os.getpid(), signal.SIGKILL)


def kill_a_producer(
    url: str, topic: str, collector: Any, *, durable: bool = False, queue: bool = False
) -> Any:
    """Run :func:`produce_then_die` (5 objects, 0.5 s heartbeats) in a child process.

    Returns the one loss ``collector`` got once its consumer ended, after checking that
    it got all 5 objects, within 20 s of the child's start.
    """
    import multiprocessing

    from tests.stream.faults import indexes

    child = multiprocessing.get_context("spawn").Process(
        target=produce_then_die, args=(url, topic, 5, 0.5, durable, queue)
    )
    started = time.monotonic()
    child.start()
    child.join(60)
    assert child.exitcode == -9
    assert indexes(collector.result()) == list(range(5))
    [loss] = collector.losses
    assert time.monotonic() - started < 20
    return loss


def produce_across_a_stall(
    url: str, topic: str, durable: bool, ready: Any, go: Any, results: Any
) -> None:
    """Producer ``P`` (0.2 s heartbeats): send 0, wait for ``go``, send 1 twice, end.

    The test stops this process between ``ready`` and ``go``. What each later call did
    goes to ``results``: the error's fields, then ``"sent"`` and ``"closed"``.
    """
    from framework.exceptions import HeartbeatLapsedError

    with RedisConnection.from_url(url) as conn:
        publisher: Any = RedisStreamPublisher(conn) if durable else RedisPublisher(conn)
        producer = StreamProducer[bytes](publisher, producer_id="P", heartbeat=0.2)
        producer.send(topic, payload(0, 16))
        ready.set()
        assert go.wait(120)
        try:
            producer.send(topic, payload(1, 16))
        except HeartbeatLapsedError as exc:
            results.put((exc.topic, exc.producer, exc.expected, exc.silent, exc.patience, str(exc)))
        else:
            results.put(None)
        producer.send(topic, payload(1, 16))  # reported once: this one goes
        results.put("sent")
        producer.close(topics=[topic])
        results.put("closed")

"""Durable topics in ``python -m benchmarks stream``: against plain redis-py XADD/XREAD,
and Redis memory under back-pressure.

* **redis-py XADD/XREAD** (baseline): the producer ``XADD``s each object into one
  stream (field ``m``), the consumer ``XREAD BLOCK``s 100 entries at a time.
* **durable**: ``StreamProducer(RedisStreamPublisher)`` with no store (objects up to
  64 KB ride in the entry, larger ones are spilled to a Redis store) and
  ``StreamConsumer(RedisStreamSubscriber).next_object()``.
* **back-pressure**: 64 MB x 8 through a durable topic with a ``RedisStore``, the
  consumer taking 0.2 s per object; peak growth of Redis ``used_memory`` (sampled
  every 5 ms) with ``BacklogBound(nbytes=...)`` and without a bound.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import redis

from framework.connection import RedisConnection
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.store import RedisStore
from framework.stream import BacklogBound, StreamConsumer, StreamProducer

MB = 1024 * 1024
#: (object size, count) per durable case: full run and quick run (batch size 1).
CASES = {False: [(1024, 20_000), (100 * 1024, 2_000)], True: [(1024, 2_000), (100 * 1024, 200)]}
#: Back-pressure bound of the 64 MB x 8 case.
BOUND = 256 * MB
#: Seconds the slow consumer spends on each object.
SLOW = 0.2


def produce_xadd(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    client = redis.Redis.from_url(url)
    stream = f"plain:{topic}"
    started = time.monotonic()
    for _ in range(count):
        client.xadd(stream, {"m": obj})
    client.close()
    return started


def consume_xread(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    client = redis.Redis.from_url(url)
    stream, last, received = f"plain:{topic}", "0", 0
    ready.set()
    while received < count:
        reply = client.xread({stream: last}, count=100, block=1000)
        for _, entries in reply:
            received += len(entries)
            last = entries[-1][0]
    client.close()
    return time.monotonic()


def _produce(url: str, topic: str, obj: Any, count: int, **kwargs: Any) -> float:
    with RedisConnection.from_url(url) as conn:
        store = RedisStore("bench", connection=conn) if kwargs.pop("store", False) else None
        producer = StreamProducer[Any](RedisStreamPublisher(conn), default_store=store, **kwargs)
        started = time.monotonic()
        for _ in range(count):
            producer.send(topic, obj)
        producer.close(topics=[topic])
    return started


def _consume(url: str, topic: str, count: int, ready: Any, pause: float = 0.0) -> float:
    with RedisConnection.from_url(url) as conn:
        consumer = StreamConsumer[Any](RedisStreamSubscriber(conn, topic, timeout=120))
        ready.set()
        for _ in range(count):
            consumer.next_object()
            if pause:  # time.sleep(0) is a system call: ~80 us per object on a VM
                time.sleep(pause)
        finished = time.monotonic()
        consumer.close(stores=True)
    return finished


def produce_durable(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    return _produce(url, topic, obj, count, batch_size=batch)


def consume_durable(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    return _consume(url, topic, count, ready)


def produce_bounded(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    bound = BacklogBound(nbytes=BOUND, timeout=120)
    return _produce(url, topic, obj, count, store=True, backlog=bound)


def produce_unbounded(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    return _produce(url, topic, obj, count, store=True, backlog=None)


def consume_slow(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    return _consume(url, topic, count, ready, pause=SLOW)


PRODUCERS = {
    "redis-py XADD": produce_xadd,
    "durable": produce_durable,
    "bounded": produce_bounded,
    "unbounded": produce_unbounded,
}
CONSUMERS = {
    "redis-py XADD": consume_xread,
    "durable": consume_durable,
    "bounded": consume_slow,
    "unbounded": consume_slow,
}


class MemoryPeak:
    """Sample Redis ``used_memory`` in a thread; ``growth`` is the peak over the start."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self.base = self.peak = int(self._client.info("memory")["used_memory"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-memory", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, int(self._client.info("memory")["used_memory"]))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        self._client.close()
        return self.peak - self.base

"""The demo: the framework's main job, end to end, across processes.

1. An object stream: a producer sends records and multi-MB binary objects on a
   durable topic; bulk objects go to a :class:`~framework.store.RedisStore`, small
   ones ride inline. A consumer in another process iterates over them and the
   digests on both sides are compared.
2. A byte stream: a :class:`~framework.cell.StreamCell` sends a blob to a cell in
   another process, chunked, checksummed and flow-controlled; the receiver's digest
   is compared with the sender's.

The demo talks to the Redis at ``url`` (or ``FRAMEWORK_REDIS_URL``); without one it
starts a throw-away :class:`~framework.embedded.EmbeddedRedis`.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing as mp
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from framework.cell import Message, StreamCell, StreamFuture
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import FrameworkError
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer

__all__ = ["DemoResult", "run_demo"]

#: Seconds any one step of the demo may take before it is reported as failed.
STEP_TIMEOUT = 120.0
_TOPIC = "demo-objects"
_CHANNEL, _BLOB_TOPIC = "demo", "blob"
_RECEIVER = "demo-receiver"
_SPAWN = mp.get_context("spawn")


@dataclass(frozen=True)
class DemoResult:
    """What one demo step moved and how fast.

    Attributes:
        step: Name of the step.
        items: Objects (or blobs) delivered.
        nbytes: Payload bytes delivered.
        seconds: Wall time from the first send to the receiver's confirmation.
    """

    step: str
    items: int
    nbytes: int
    seconds: float

    def __str__(self) -> str:
        rate = self.nbytes / self.seconds / 1e6 if self.seconds else 0.0
        return (
            f"{self.step}: {self.items} item(s), {self.nbytes / 1e6:.1f} MB "
            f"in {self.seconds:.2f} s ({rate:.0f} MB/s), digests match"
        )


def _objects(records: int, blobs: int, blob_mb: int) -> Iterator[Any]:
    """The demo's objects: small records (inline) and large binary objects (stored)."""
    for i in range(records):
        yield {"i": i, "name": f"sample-{i}", "tags": ["héllo", "→ wörld"], "score": i / 7}
    for i in range(blobs):
        yield hashlib.sha256(str(i).encode()).digest() * (blob_mb * 32768)


def _digest(objects: Iterator[Any]) -> tuple[int, int, str]:
    """Count, payload bytes and a digest of a sequence of demo objects."""
    h, count, nbytes = hashlib.sha256(), 0, 0
    for obj in objects:
        data = obj if isinstance(obj, bytes) else repr(sorted(obj.items())).encode()
        h.update(data)
        count, nbytes = count + 1, nbytes + len(data)
    return count, nbytes, h.hexdigest()


def _consume_objects(url: str, out: Any) -> None:
    """Child process: read the topic to its end and report what arrived."""
    with (
        RedisConnection.from_url(url) as conn,
        StreamConsumer[Any](RedisStreamSubscriber(conn, _TOPIC, timeout=STEP_TIMEOUT)) as consumer,
    ):
        out.put(_digest(consumer.iter_objects()))


def _receive_blob(url: str, out: Any) -> None:
    """Child process: a cell that receives one blob and reports its digest."""

    def on_blob(future: StreamFuture) -> None:
        blob = future.result(timeout=STEP_TIMEOUT)
        out.put((len(blob), hashlib.sha256(blob).hexdigest()))

    with RedisConnection.from_url(url) as conn, StreamCell(conn, _RECEIVER) as cell:
        cell.register_blob_cb(_CHANNEL, _BLOB_TOPIC, on_blob)
        # The parent ends this process once it has the digest.
        time.sleep(STEP_TIMEOUT)


@contextlib.contextmanager
def _child(target: Callable[[str, Any], None], url: str) -> Iterator[Any]:
    """Run ``target(url, queue)`` in a spawned process; yield the queue; always reap it."""
    out = _SPAWN.Queue()
    proc = _SPAWN.Process(target=target, args=(url, out), name=f"demo-{target.__name__}")
    proc.start()
    try:
        yield out
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join(10)


def _object_step(
    conn: RedisConnection, url: str, records: int, blobs: int, blob_mb: int
) -> DemoResult:
    expected = _digest(_objects(records, blobs, blob_mb))
    started = time.perf_counter()
    with _child(_consume_objects, url) as out:
        store = RedisStore("demo", connection=conn, ttl=STEP_TIMEOUT * 10)
        with StreamProducer[Any](
            RedisStreamPublisher(conn), default_store=store, batch_size=50
        ) as producer:
            for obj in _objects(records, blobs, blob_mb):
                producer.send(_TOPIC, obj)
            producer.close_topics(_TOPIC)
        received = out.get(timeout=STEP_TIMEOUT)
    _check("object stream", expected, received)
    return DemoResult("object stream", expected[0], expected[1], time.perf_counter() - started)


def _blob_step(conn: RedisConnection, url: str, blob_mb: int) -> DemoResult:
    blob = os.urandom(blob_mb << 20)
    expected = (len(blob), hashlib.sha256(blob).hexdigest())
    started = time.perf_counter()
    with _child(_receive_blob, url) as out, StreamCell(conn, "demo-sender") as cell:
        future = cell.send_blob(
            _CHANNEL, _BLOB_TOPIC, _RECEIVER, Message({"name": "weights"}, blob)
        )
        future.result(timeout=STEP_TIMEOUT)
        received = out.get(timeout=STEP_TIMEOUT)
    _check("byte stream", expected, received)
    return DemoResult("byte stream (blob)", 1, len(blob), time.perf_counter() - started)


def _check(step: str, expected: tuple[Any, ...], received: tuple[Any, ...]) -> None:
    if tuple(received) != tuple(expected):
        raise FrameworkError(f"The {step} delivered {received!r}, expected {expected!r}.")


@contextlib.contextmanager
def _redis(url: str | None, echo: Callable[[str], None]) -> Iterator[str]:
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        kind = "fakeredis TCP server" if server.is_fake else "redis-server"
        echo(f"No Redis configured: started an embedded {kind} at {server.url}")
        yield server.url


def run_demo(
    url: str | None = None,
    *,
    records: int = 2000,
    blobs: int = 4,
    blob_mb: int = 16,
    echo: Callable[[str], None] = print,
) -> list[DemoResult]:
    """Run both demo steps and return what they measured.

    Args:
        url: Redis URL; ``None`` starts an embedded Redis.
        records: Small records sent on the object stream.
        blobs: Large binary objects sent on the object stream.
        blob_mb: Size of each large object and of the byte-stream blob, in MB.
        echo: Where progress lines go.

    Returns:
        One :class:`DemoResult` per step.

    Raises:
        FrameworkError: If a step fails or delivers something other than what was sent.
    """
    with _redis(url, echo) as redis_url, RedisConnection.from_url(redis_url) as conn:
        echo(f"Redis: {conn.url()}")
        results = [
            _object_step(conn, redis_url, records, blobs, blob_mb),
            _blob_step(conn, redis_url, blob_mb * 4),
        ]
        for result in results:
            echo(str(result))
        return results

"""Cross-process object streams: StreamProducer/StreamConsumer against plain redis-py.

A producer process sends N objects of one size to a consumer process, which
fetches each one; the rate is N over the time from the producer's first send to
the consumer's last object (both read the same monotonic clock). Objects are
``bytes`` or numpy arrays; batch sizes 1 and 100.

* **redis-py** (baseline, same run, same server): the producer ``SET``s each object
  under a fresh key and ``PUBLISH``es the key (batch 100: one pipeline of 100 SETs
  plus one PUBLISH of the 100 keys); the consumer ``SUBSCRIBE``s and ``GETDEL``s
  each key (batch 100: one pipeline). numpy arrays travel as ``tobytes()`` and
  come back with ``np.frombuffer``.
* **framework**: ``StreamProducer(RedisPublisher, default_store=RedisStore, batch_size)``
  and ``StreamConsumer(RedisSubscriber).next_object()`` (evict on consume).
* **framework-default**: the same without a store: objects up to 64 KB ride inside
  the event message, larger ones are spilled to a Redis store automatically.
* **proxystore** 1.1 with its Redis shims and ``RedisConnector`` store, when installed.

Targets: framework >= 1.0x redis-py at every size with batch size 1, and >= 20,000
objects/s for 1 KB with batch size 100.
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from typing import Any

import numpy as np
import redis

from benchmarks import _durable, _spill
from benchmarks.common import MB, SPAWN, table
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.pubsub import RedisPublisher, RedisSubscriber
from framework.store import RedisStore
from framework.stream import StreamConsumer, StreamProducer

#: (object size, count) per case: full run and quick run.
CASES = {
    False: [(1024, 20_000), (100 * 1024, 2_000), (MB, 500), (64 * MB, 8)],
    True: [(1024, 2_000), (100 * 1024, 200), (MB, 50), (16 * MB, 4)],
}
BATCHES = (1, 100)
KINDS = ("bytes", "numpy")
#: Timed runs per measurement; the median rate is reported.
REPEAT = {False: 5, True: 1}
TARGET_RATIO = 1.0
NOTES = (
    "*framework*: a topic with a `RedisStore` (objects stored, keys published, evicted on "
    "consume), the same work as the redis-py baseline. *framework-default*: no store "
    "(objects up to 64 KB travel inside the event message, larger ones are spilled to a "
    "Redis store automatically). Rates are medians of interleaved runs, producer and "
    "consumer in separate processes, one redis-server, 2 cores shared by all three."
)
TARGET_SMALL_BATCHED = 20_000


def _object(kind: str, size: int) -> Any:
    if kind == "bytes":
        return b"\x5a" * size
    return np.full(size // 8, 7.0)


def _have_proxystore() -> bool:
    try:
        import proxystore.stream  # noqa: F401
    except ImportError:
        return False
    return True


# -- producers (run in the producer process) ------------------------------------------------


def _produce_plain(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    client = redis.Redis.from_url(url)
    channel = f"plain:{topic}"
    started = time.monotonic()
    if batch == 1:
        for i in range(count):
            key = f"plain:{topic}:{i}"
            client.set(key, obj.tobytes() if isinstance(obj, np.ndarray) else obj)
            client.publish(channel, key)
    else:
        for first in range(0, count, batch):
            pipe = client.pipeline(transaction=False)
            keys = [f"plain:{topic}:{i}" for i in range(first, min(first + batch, count))]
            for key in keys:
                pipe.set(key, obj.tobytes() if isinstance(obj, np.ndarray) else obj)
            pipe.publish(channel, ",".join(keys))
            pipe.execute()
    client.close()
    return started


def _produce_framework(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    return _produce_ours(url, topic, obj, count, batch, store=True)


def _produce_default(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    return _produce_ours(url, topic, obj, count, batch, store=False)


def _produce_ours(url: str, topic: str, obj: Any, count: int, batch: int, *, store: bool) -> float:
    with RedisConnection.from_url(url) as conn:
        default = RedisStore("bench", connection=conn) if store else None
        producer = StreamProducer[Any](
            RedisPublisher(conn), default_store=default, batch_size=batch
        )
        started = time.monotonic()
        for _ in range(count):
            producer.send(topic, obj)
        producer.close(topics=[topic])
    return started


def _produce_proxystore(url: str, topic: str, obj: Any, count: int, batch: int) -> float:
    from proxystore.connectors.redis import RedisConnector
    from proxystore.store import Store
    from proxystore.stream import StreamProducer as PSProducer
    from proxystore.stream.shims.redis import RedisPublisher as PSPublisher

    host, port = url.removeprefix("redis://").split(":")
    store = Store("ps-bench", RedisConnector(host, int(port)), register=True)
    producer = PSProducer(PSPublisher(host, int(port)), default_store=store, batch_size=batch)
    started = time.monotonic()
    for _ in range(count):
        producer.send(topic, obj, evict=True)
    producer.close(topics=[topic], stores=True)
    return started


# -- consumers (run in the consumer process) ------------------------------------------------


def _consume_plain(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub()
    pubsub.subscribe(f"plain:{topic}")
    while pubsub.get_message(timeout=1.0) is None:
        pass  # the subscribe confirmation
    ready.set()
    received = 0
    while received < count:
        message = pubsub.get_message(timeout=1.0, ignore_subscribe_messages=True)
        if message is None:
            continue
        keys = message["data"].split(b",")
        if len(keys) == 1:
            values = [client.getdel(keys[0])]
        else:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.getdel(key)
            values = pipe.execute()
        for value in values:
            obj = np.frombuffer(value, dtype=np.float64) if kind == "numpy" else value
            received += obj is not None
    pubsub.close()
    client.close()
    return time.monotonic()


def _consume_framework(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    with RedisConnection.from_url(url) as conn:
        consumer = StreamConsumer[Any](RedisSubscriber(conn, topic, timeout=120))
        ready.set()
        for _ in range(count):
            consumer.next_object()
        finished = time.monotonic()
        consumer.close(stores=True)
    return finished


def _consume_proxystore(url: str, topic: str, kind: str, count: int, ready: Any) -> float:
    from proxystore.stream import StreamConsumer as PSConsumer
    from proxystore.stream.shims.redis import RedisSubscriber as PSSubscriber

    host, port = url.removeprefix("redis://").split(":")
    consumer = PSConsumer(PSSubscriber(host, int(port), topic))
    time.sleep(0.2)  # its subscribe is not confirmed before the constructor returns
    ready.set()
    for _ in range(count):
        consumer.next_object()
    finished = time.monotonic()
    consumer.close(stores=True)
    return finished


PRODUCERS = {
    "redis-py": _produce_plain,
    "framework": _produce_framework,
    "framework-default": _produce_default,
    "proxystore": _produce_proxystore,
}
CONSUMERS = {
    "redis-py": _consume_plain,
    "framework": _consume_framework,
    "framework-default": _consume_framework,
    "proxystore": _consume_proxystore,
}
PRODUCERS.update(_durable.PRODUCERS)
CONSUMERS.update(_durable.CONSUMERS)


# -- orchestration --------------------------------------------------------------------------


def _worker(pipe: Any, ready: Any) -> None:
    """Serve measurement requests until told to stop (one process per role)."""
    while True:
        request = pipe.recv()
        if request is None:
            return
        role, system, url, kind, size, count, batch, topic = request
        try:
            if role == "producer":
                result = PRODUCERS[system](url, topic, _object(kind, size), count, batch)
            else:
                result = CONSUMERS[system](url, topic, kind, count, ready)
        except Exception as exc:
            pipe.send(exc)
            continue
        pipe.send(result)


class _Pair:
    """A long-lived producer process and consumer process, restarted after a failure."""

    def __init__(self) -> None:
        self.ready = SPAWN.Event()
        self.pipes: dict[str, Any] = {}
        self.processes: list[Any] = []
        self._start()

    def _start(self) -> None:
        for role in ("producer", "consumer"):
            ours, theirs = SPAWN.Pipe()
            process = SPAWN.Process(target=_worker, args=(theirs, self.ready), daemon=True)
            process.start()
            self.pipes[role], self.processes = ours, [*self.processes, process]

    def restart(self) -> None:
        """Kill both workers (one may be stuck waiting for lost messages) and start anew."""
        for process in self.processes:
            process.kill()
            process.join(10)
        self.pipes, self.processes = {}, []
        self._start()

    def measure(self, system: str, url: str, kind: str, size: int, count: int, batch: int) -> float:
        topic = uuid.uuid4().hex[:8]
        self.ready.clear()
        args = (system, url, kind, size, count, batch, topic)
        self.pipes["consumer"].send(("consumer", *args))
        deadline = time.monotonic() + 60
        while not self.ready.wait(0.1):
            if self.pipes["consumer"].poll() or time.monotonic() > deadline:
                self._result("consumer", 1)  # raises the consumer's error
                raise RuntimeError(f"The {system} consumer did not start.")
        self.pipes["producer"].send(("producer", *args))
        started = self._result("producer", 300)
        finished = self._result("consumer", 120)
        return count / (finished - started)

    def _result(self, role: str, timeout: float) -> float:
        if not self.pipes[role].poll(timeout):
            raise TimeoutError(f"The {role} process did not answer within {timeout} s.")
        result = self.pipes[role].recv()
        if isinstance(result, Exception):
            raise result
        return float(result)

    def close(self) -> None:
        for pipe in self.pipes.values():
            pipe.send(None)
        for process in self.processes:
            process.join(30)


def _rates(
    pair: _Pair, systems: list[str], url: str, case: tuple[Any, ...], quick: bool
) -> dict[str, float]:
    """Median rate per system; systems are interleaved in each round.

    Only proxystore may fail (its pub/sub consumer waits forever for a lost message):
    its rate is then NaN and the workers are restarted.
    """
    kind, size, count, batch = case
    samples: dict[str, list[float]] = {system: [] for system in systems}
    for _ in range(REPEAT[quick]):
        for system in systems:
            try:
                rate = pair.measure(system, url, kind, size, count, batch)
            except Exception:
                if system != "proxystore":
                    raise
                pair.restart()
                rate = math.nan
            samples[system].append(rate)
    return {system: statistics.median(rates) for system, rates in samples.items()}


def _row(case: tuple[Any, ...], rates: dict[str, float], systems: list[str]) -> list[Any]:
    kind, size, count, batch = case
    ratio = rates["framework"] / rates["redis-py"]
    if batch == 1:
        met = "met" if ratio >= TARGET_RATIO else "MISSED"
        target = f"{ratio:.2f}x (>= {TARGET_RATIO}x: {met})"
    elif size == 1024:
        met = "met" if rates["framework"] >= TARGET_SMALL_BATCHED else "MISSED"
        target = f"{ratio:.2f}x (>= {TARGET_SMALL_BATCHED:,}/s: {met})"
    else:
        target = f"{ratio:.2f}x"
    default = rates["framework-default"] / rates["redis-py"]
    label = f"{size // 1024} KB" if size < MB else f"{size // MB} MB"
    cells = [f"{rates[s]:,.0f}" for s in systems]
    mb_s = rates["framework"] * size / MB
    return [f"{label} x {count:,}", kind, batch, *cells, f"{mb_s:,.0f}", target, f"{default:.2f}x"]


def run(quick: bool = False) -> str:
    """Run every case and return the markdown report."""
    systems = ["redis-py", "framework", "framework-default"]
    systems += ["proxystore"] if _have_proxystore() else []
    rows = []
    with EmbeddedRedis(fake_fallback=False) as server:
        pair = _Pair()
        try:
            for size, count in CASES[quick]:
                for kind in KINDS:
                    for batch in BATCHES:
                        case = (kind, size, count, batch)
                        rates = _rates(pair, systems, server.url, case, quick)
                        rows.append(_row(case, rates, systems))
                        print(" | ".join(str(c) for c in rows[-1]), flush=True)
            durable = _durable_table(pair, server.url, quick)
            spill = _spill_table(server.url, quick)
        finally:
            pair.close()
    header = [
        "objects",
        "type",
        "batch",
        *(f"{s} obj/s" for s in systems),
        "framework MB/s",
        "framework / redis-py (target)",
        "default / redis-py",
    ]
    notes = "\n\n" + NOTES
    if "proxystore" not in systems:
        notes += "\n\nproxystore is not installed: its column is skipped."
    return table(header, rows) + notes + "\n\n" + durable + "\n\n" + spill


def _spill_table(url: str, quick: bool) -> str:
    """A large, slowly pickled inline object, spilled: serialized once (see ``_spill``)."""
    rows = _spill.table_rows(url, quick)
    for row in rows:
        print(" | ".join(str(c) for c in row), flush=True)
    report = table(["object", "case", "seconds", "vs pickle.dumps"], rows)
    return report + "\n\n" + (_spill.__doc__ or "").split("\n\n", 1)[1]


def _durable_table(pair: _Pair, url: str, quick: bool) -> str:
    """Durable topics against XADD/XREAD, and Redis memory under back-pressure."""
    systems = ["redis-py XADD", "durable"]
    rows = []
    for size, count in _durable.CASES[quick]:
        rates = _rates(pair, systems, url, ("bytes", size, count, 1), quick)
        ratio = rates["durable"] / rates["redis-py XADD"]
        met = "met" if ratio >= TARGET_RATIO else "MISSED"
        label = f"{size // 1024} KB x {count:,}"
        cells = [f"{rates[s]:,.0f}" for s in systems]
        rows.append([label, 1, *cells, f"{ratio:.2f}x (>= {TARGET_RATIO}x: {met})"])
        print(" | ".join(str(c) for c in rows[-1]), flush=True)
    report = table(
        ["objects", "batch", "redis-py XADD/XREAD obj/s", "durable obj/s", "ratio"], rows
    )
    size, count = (64 * MB, 8) if not quick else (16 * MB, 8)
    memory = []
    for system in ("bounded", "unbounded"):
        peak = _durable.MemoryPeak(url)
        pair.measure(system, url, "bytes", size, count, 1)
        growth = peak.stop()
        bound = f"{_durable.BOUND // MB} MB" if system == "bounded" else "none"
        within = "within" if growth <= _durable.BOUND else "ABOVE"
        memory.append([f"{size // MB} MB x {count}", bound, f"{growth / MB:,.0f} MB", within])
        print(" | ".join(str(c) for c in memory[-1]), flush=True)
    memory_table = table(
        ["objects", "back-pressure bound", "peak Redis growth", "vs bound"], memory
    )
    return report + "\n\n" + memory_table + "\n\n" + _durable.__doc__.split("\n\n", 1)[1]

"""A large inline object on a store-less topic, in ``python -m benchmarks stream``.

The producer serializes each inline object to see whether it fits in the message;
one that does not goes to the automatic spill store. Its frame is stored as it was
built (signed when the producer has a secret), so ``send`` + ``flush`` of an object
that pickles slowly (a list of 1.5 million tuples, 36 MB pickled) should take about
one ``pickle.dumps`` of it plus the write to Redis, not two serializations.

* **baseline**: ``pickle.dumps(obj, protocol=5)`` in the same process.
* **spilled**: ``StreamProducer(RedisPublisher).send(topic, obj)`` + ``flush()``,
  without and with a ``secret``. No consumer: the spilled object expires with the
  spill store's TTL in the throw-away server.
"""

from __future__ import annotations

import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from framework.connection import RedisConnection
from framework.pubsub import RedisPublisher
from framework.stream import StreamProducer

#: Tuples in the object: full run and quick run.
TUPLES = {False: 1_500_000, True: 100_000}
REPEAT = {False: 3, True: 1}
SECRET = b"bench-spill-secret-0123456789abc"


def table_rows(url: str, quick: bool) -> list[list[Any]]:
    """``[case, seconds, ratio to pickle.dumps]`` rows, medians of interleaved runs."""
    obj = [(i, str(i), float(i)) for i in range(TUPLES[quick])]
    size = len(pickle.dumps(obj, protocol=5))
    with RedisConnection.from_url(url) as conn:
        cases: dict[str, Callable[[], object]] = {
            "pickle.dumps (baseline)": lambda: pickle.dumps(obj, protocol=5),
            "send + flush, spilled": _sender(conn, obj, None),
            "send + flush, spilled, signed": _sender(conn, obj, SECRET),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(REPEAT[quick]):
            for name, case in cases.items():
                started = time.perf_counter()
                case()
                times[name].append(time.perf_counter() - started)
    base = statistics.median(times["pickle.dumps (baseline)"])
    label = f"{size / 2**20:.0f} MB pickled"
    return [
        [label, name, statistics.median(t), f"{statistics.median(t) / base:.2f}x"]
        for name, t in times.items()
    ]


def _sender(conn: RedisConnection, obj: Any, secret: bytes | None) -> Callable[[], None]:
    def send() -> None:
        with StreamProducer[Any](RedisPublisher(conn), secret=secret) as producer:
            producer.send("bench-spill", obj)
            producer.flush()

    return send

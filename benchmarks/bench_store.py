"""RedisStore against plain redis-py on the same redis-server, in the same run.

* 1 KB x 10,000: ``put_batch`` + ``get_batch`` (one MSET + one MGET) against a loop of
  plain ``SET``/``GET`` (one round trip each). Target: >= 5x. Plain ``MSET``/``MGET``
  is shown too, as the ceiling for batched small values, and so are 1 KB dicts, which
  take the general pickle path instead of the raw ``bytes`` fast path.
* 64 MB x 8: ``put`` + ``get`` per object against plain ``SET``/``GET`` per object.
  Target: >= 1.0x. The store frames and serializes (raw fast path) and sends through
  the zero-copy packer; plain redis-py uses its default hiredis packer.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.common import MB, peak_rss_mb, table
from framework.embedded import EmbeddedRedis
from framework.store import RedisStore

#: Small-object case: value size and count (full run, quick run).
SMALL = {False: (1024, 10_000), True: (1024, 2_000)}
#: Large-object case: value size and count (full run, quick run).
LARGE = {False: (64 * MB, 8), True: (16 * MB, 4)}
#: Timed repetitions per variant (the median is reported; variants are interleaved).
REPEAT = {False: 5, True: 1}
#: Targets: store speed-up over plain per-object SET/GET.
TARGETS = {"small": 5.0, "large": 1.0}


def _median_times(
    setup: Callable[[], Any], works: dict[str, Callable[[], Any]], repeat: int
) -> dict[str, float]:
    """Median wall time of each variant; rounds interleave the variants, so a noisy
    moment on the shared machine hits all of them alike. ``setup`` runs untimed first."""
    times: dict[str, list[float]] = {label: [] for label in works}
    for _ in range(repeat):
        for label, work in works.items():
            setup()
            started = time.perf_counter()
            work()
            times[label].append(time.perf_counter() - started)
    return {label: statistics.median(spans) for label, spans in times.items()}


def _plain_each(client: Any, values: list[bytes]) -> None:
    keys = [f"plain:{i}" for i in range(len(values))]
    for key, value in zip(keys, values, strict=True):
        client.set(key, value)
    for key in keys:
        client.get(key)


def _plain_batched(client: Any, values: list[bytes]) -> None:
    keys = [f"plain:{i}" for i in range(len(values))]
    client.mset(dict(zip(keys, values, strict=True)))
    client.mget(keys)


def _store_batched(store: RedisStore, values: list[Any]) -> None:
    store.get_batch(store.put_batch(values))


def _store_each(store: RedisStore, values: list[bytes]) -> None:
    keys = [store.put(value) for value in values]
    for key in keys:
        store.get(key)


def _small(plain: Any, store: RedisStore, quick: bool) -> list[list[Any]]:
    size, count = SMALL[quick]
    values = [os.urandom(size) for _ in range(count)]
    # Python objects of about the same size take the general (pickle) path.
    objects = [{"id": i, "tags": ["a", "b"], "data": os.urandom(size - 64)} for i in range(count)]
    works = {
        "plain SET/GET per object": lambda: _plain_each(plain, values),
        "plain MSET/MGET": lambda: _plain_batched(plain, values),
        "RedisStore put_batch/get_batch": lambda: _store_batched(store, values),
        "RedisStore put_batch/get_batch, dicts": lambda: _store_batched(store, objects),
    }
    rows = []
    for label, seconds in _median_times(plain.flushdb, works, REPEAT[quick]).items():
        rows.append([label, f"{size} B x {count}", seconds, count / seconds])
        print(f"  small: {label}: {seconds:.3f} s", flush=True)
    return rows


def _large(plain: Any, store: RedisStore, quick: bool) -> list[list[Any]]:
    size, count = LARGE[quick]
    values = [os.urandom(size) for _ in range(count)]
    works = {
        "plain SET/GET per object": lambda: _plain_each(plain, values),
        "RedisStore put/get per object": lambda: _store_each(store, values),
    }
    rows = []
    for label, seconds in _median_times(plain.flushdb, works, REPEAT[quick]).items():
        rows.append([label, f"{size // MB} MB x {count}", seconds, 2 * size * count / MB / seconds])
        print(f"  large: {label}: {seconds:.3f} s", flush=True)
    plain.flushdb()
    return rows


def _verdict(name: str, baseline: float, ours: float) -> str:
    ratio = baseline / ours
    target = TARGETS[name]
    status = "met" if ratio >= target else "NOT met"
    return f"- {name}: {ratio:.2f}x plain per-object SET/GET (target >= {target:.1f}x: {status})"


def run(quick: bool = False) -> str:
    """Run both cases and return the markdown report."""
    with EmbeddedRedis(fake_fallback=False) as server, server.connection() as conn:
        plain = redis.Redis(host="127.0.0.1", port=server.ports[0])
        try:
            with RedisStore("bench", connection=conn) as store:
                # Open every connection (and let the codec learn the 1 KB frame) untimed.
                plain.set("warm", b"x")
                plain.get("warm")
                store.get_batch(store.put_batch([os.urandom(SMALL[quick][0])] * 3, ttl=1))
                store.get(store.put(b"x"))
                small = _small(plain, store, quick)
                large = _large(plain, store, quick)
        finally:
            plain.close()
    report = [
        "### RedisStore vs plain redis-py (same redis-server, same run)",
        "",
        table(["variant", "values", "put+get time (s)", "objects/s"], small),
        "",
        table(["variant", "values", "put+get time (s)", "MB/s (put+get)"], large),
        "",
        _verdict("small", small[0][2], small[2][2]),
        f"- small, for reference: {small[1][2] / small[2][2]:.2f}x plain MSET/MGET "
        "(the store adds framing and serialization to every object); "
        f"1 KB dicts (pickled): {small[0][2] / small[3][2]:.2f}x plain per-object SET/GET",
        _verdict("large", large[0][2], large[1][2]),
        f"- peak RSS of the benchmark process: {peak_rss_mb():.0f} MB",
    ]
    return "\n".join(report)

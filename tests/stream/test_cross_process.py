"""Producer and consumer in separate (spawned) processes: pub/sub and durable topics."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from framework.connection import RedisConnection
from tests.stream import _children

pytestmark = pytest.mark.slow

SPAWN = multiprocessing.get_context("spawn")
#: Mostly small objects, plus some over the 64 KB inline limit (spilled on pub/sub).
SIZES = [100_000 if i % 10 == 3 else 1000 + i for i in range(60)]


def _url(backend: str, request: pytest.FixtureRequest) -> str:
    fixture = {"real": "redis_url", "fake": "fake_tcp_url", "cluster": "cluster_url"}[backend]
    url: str = request.getfixturevalue(fixture)
    if backend != "fake":  # the session servers are shared: start from empty
        request.getfixturevalue(f"{backend}_conn")
    return url


def _start_consumer(url: str, mode: str, **kwargs: Any) -> tuple[Any, Any]:
    ready, results = SPAWN.Event(), SPAWN.Queue()
    process = SPAWN.Process(
        target=_children.consume, args=(url, mode, "t", ready, results), kwargs=kwargs
    )
    process.start()
    assert ready.wait(60), "the consumer process did not start"
    return process, results


def _run_producer(url: str, mode: str, sizes: list[int], batch_size: int) -> None:
    process = SPAWN.Process(target=_children.produce, args=(url, mode, "t", sizes, batch_size))
    process.start()
    process.join(60)
    assert process.exitcode == 0


@pytest.mark.parametrize("mode", ["pubsub", "durable"])
@pytest.mark.parametrize("backend", ["real", "fake", "cluster"])
def test_objects_cross_processes(backend: str, mode: str, request: pytest.FixtureRequest) -> None:
    url = _url(backend, request)
    consumer, results = _start_consumer(url, mode)
    _run_producer(url, mode, SIZES, batch_size=4)
    got = results.get(timeout=90)
    consumer.join(30)
    assert consumer.exitcode == 0
    assert got == list(enumerate(SIZES))


@pytest.mark.parametrize("backend", ["real", "fake", "cluster"])
def test_killed_durable_consumer_loses_nothing(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = _url(backend, request)
    total = 120
    _run_producer(url, "durable", [512] * total, batch_size=5)  # durable: no consumer yet
    first, _ = _start_consumer(url, "durable", group="g", name="first", record="seen", pause=0.02)
    with RedisConnection.from_url(url) as conn:
        deadline = time.monotonic() + 60
        while conn.client.llen("seen") < 23 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.kill()  # mid-stream, mid-batch, without any chance to clean up
        first.join(10)
        killed_at = conn.client.llen("seen")
        assert 0 < killed_at < total
        second, results = _start_consumer(url, "durable", group="g", name="second", record="seen")
        got = results.get(timeout=90)
        second.join(30)
        seen = [int(i) for i in conn.client.lrange("seen", 0, -1)]
        assert not list(conn.client.scan_iter(match="fw:obj:*"))  # every object evicted
    assert second.exitcode == 0
    assert set(seen) == set(range(total))  # none lost
    assert {i for i, _ in got} >= set(range(killed_at, total))

"""The object protocol across processes: real Redis, a local cluster, SIGKILL, CLIENT KILL."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.objects import (
    EngineConfig,
    FLContext,
    ObjectProducer,
    ReservedHeaderKey,
    ReturnCode,
    Shareable,
)
from tests.objects.conftest import EngineFactory
from tests.objects.helpers import (
    ListProducer,
    RecordingFactory,
    child_sender,
    child_site,
    shareable,
)

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(
    params=[
        pytest.param("real", id="real", marks=pytest.mark.integration),
        pytest.param("cluster", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]),
    ]
)
def url(request: pytest.FixtureRequest) -> str:
    """A server reachable from child processes: redis-server or a local cluster (flushed)."""
    request.getfixturevalue(f"{request.param}_conn")
    value: str = request.getfixturevalue(
        "cluster_url" if request.param == "cluster" else "redis_url"
    )
    return value


@pytest.fixture
def remote_conn(url: str) -> Iterator[RedisConnection]:
    with RedisConnection.from_url(url) as conn:
        yield conn


@pytest.fixture
def children() -> Iterator[list[Any]]:
    """Spawned processes, killed after the test."""
    procs: list[Any] = []
    yield procs
    for proc in procs:
        if proc.is_alive():
            proc.kill()
        proc.join(10)


def expect(queue: Any, kind: str, timeout: float = 60) -> tuple[Any, ...]:
    item: tuple[Any, ...] = queue.get(timeout=timeout)
    assert item[0] == kind, item
    return item


class WeightsProducer(ObjectProducer):
    """Three rounds of model weights (a dict of numpy arrays), one large, with checks."""

    def __init__(self) -> None:
        self.round = 0
        self.replies: list[dict[str, Shareable]] = []

    def weights(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.round)
        return {
            "dense": rng.standard_normal((512, 256)).astype(np.float32),  # 512 KB
            "bias": rng.standard_normal(256),
        }

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        if self.round == 3:
            return None, 30
        return Shareable({"round": self.round, **self.weights()}), 30

    def process_replies(self, replies: dict[str, Shareable], stream_ctx: Any, fl_ctx: Any) -> Any:
        expected = {k: float(v.sum()) for k, v in self.weights().items()}
        for reply in replies.values():
            assert reply.get_return_code() == ReturnCode.OK, reply
            assert reply["round"] == self.round
            assert reply["sums"] == pytest.approx(expected)
        self.replies.append(replies)
        self.round += 1
        return None


def test_server_streams_rounds_of_weights_to_two_client_processes(
    url: str, remote_conn: RedisConnection, make_engine: EngineFactory, children: list[Any]
) -> None:
    queue = SPAWN.Queue()
    for name in ("site-1", "site-2"):
        # site-2 takes the large array as a byte stream, site-1 inline in its mailbox
        limit = 1 << 20 if name == "site-1" else 64 * 1024
        proc = SPAWN.Process(target=child_site, args=(url, name, queue, limit), daemon=True)
        proc.start()
        children.append(proc)
    assert {expect(queue, "ready")[1] for _ in range(2)} == {"site-1", "site-2"}
    for limit in (1 << 20, 64 * 1024):  # inline, then as one byte stream to both
        server = make_engine(
            remote_conn, f"server-{limit}", config=EngineConfig(inline_limit=limit)
        )
        producer = WeightsProducer()
        rc, _ = server.stream_objects(
            "fl", "weights", {}, ["site-1", "site-2"], producer, FLContext()
        )
        assert rc == ReturnCode.OK
        assert len(producer.replies) == 3
        done = {expect(queue, "done")[1:] for _ in range(2)}
        assert done == {("site-1", "OK", 3), ("site-2", "OK", 3)}


def test_a_killed_sender_s_session_is_finalized_by_idle_expiry(
    url: str, remote_conn: RedisConnection, make_engine: EngineFactory, children: list[Any]
) -> None:
    factory = RecordingFactory()
    site = make_engine(remote_conn, "site", config=EngineConfig(idle_timeout=0.5))
    site.register_stream_processing("c", "t", factory)
    queue = SPAWN.Queue()
    proc = SPAWN.Process(target=child_sender, args=(url, "site", queue), daemon=True)
    proc.start()
    children.append(proc)
    assert expect(queue, "sent")[1] == {"site": "OK"}
    proc.kill()  # SIGKILL: no end, no abort, nothing
    proc.join(10)
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TIMEOUT
    assert session.events == ["consume", "finalize", "return"]


@pytest.mark.parametrize("inline_limit", [1 << 20, 64 * 1024], ids=["mailbox", "byte-stream"])
def test_a_killed_target_fails_its_rounds_within_seconds_not_at_the_timeout(
    url: str,
    remote_conn: RedisConnection,
    make_engine: EngineFactory,
    children: list[Any],
    inline_limit: int,
) -> None:
    # A SIGKILLed engine leaves its mailbox for its TTL (600 s), so objects still reach
    # it; only its cell's lease, no longer renewed, says that nobody will answer.
    # A queue each: a process killed while it uses a queue may leave it unusable.
    queues = {name: SPAWN.Queue() for name in ("site-1", "site-2")}
    for name, queue in queues.items():
        proc = SPAWN.Process(target=child_site, args=(url, name, queue, inline_limit), daemon=True)
        proc.start()
        children.append(proc)
    assert [expect(queue, "ready")[1] for queue in queues.values()] == ["site-1", "site-2"]
    children[1].kill()
    children[1].join(10)
    server = make_engine(remote_conn, "server", config=EngineConfig(inline_limit=inline_limit))
    weights = np.ones(64 * 1024)  # 512 KB: a byte stream to both beyond the inline limit
    producer = ListProducer([shareable(round=i, w=weights) for i in range(3)], timeout=120)
    started = time.monotonic()
    rc, _ = server.stream_objects("fl", "weights", {}, ["site-1", "site-2"], producer, FLContext())
    assert time.monotonic() - started < 30  # the lease lapses in 3 s; the timeout is 120 s
    assert rc == ReturnCode.COMMUNICATION_ERROR
    assert [r["site-1"].get_return_code() for r in producer.rounds] == ["OK"] * 3
    assert [r["site-1"]["sums"]["w"] for r in producer.rounds] == [64 * 1024.0] * 3
    gone = [r["site-2"] for r in producer.rounds]
    assert [r.get_return_code() for r in gone] == ["COMMUNICATION_ERROR"] * 3
    assert "site-2" in gone[0].get_header(ReservedHeaderKey.ERROR)
    assert "lease" in gone[0].get_header(ReservedHeaderKey.ERROR)
    assert expect(queues["site-1"], "done")[1:] == ("site-1", "OK", 3)


def test_client_kill_mid_stream_loses_and_duplicates_nothing(
    redis_server: EmbeddedRedis, real_conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(real_conn, "server")
    factory = RecordingFactory()
    make_engine(real_conn, "site").register_stream_processing("c", "t", factory)
    stop = threading.Event()

    def killer() -> None:
        with redis.Redis(port=redis_server.ports[0]) as admin:
            me = admin.client_id()
            while not stop.wait(0.05):
                for client in admin.client_list():
                    if int(client["id"]) != me:
                        admin.client_kill_filter(_id=client["id"])

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        producer = ListProducer([shareable(i=i) for i in range(25)], timeout=20)
        rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    finally:
        stop.set()
        thread.join(10)
    assert rc == ReturnCode.OK
    assert [r["site"].get_return_code() for r in producer.rounds] == ["OK"] * 25
    assert [r["site"]["n"] for r in producer.rounds] == list(range(1, 26))
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == list(range(25))
    assert session.rc == ReturnCode.OK


@pytest.mark.slow
def test_a_256_mb_shareable_reaches_two_targets_intact(
    real_conn: RedisConnection, make_engine: EngineFactory
) -> None:
    from framework.cell import CellConfig, StreamCell
    from framework.objects import RedisStreamableEngine

    cells = [StreamCell(real_conn, n, config=CellConfig()) for n in ("server", "a", "b")]
    engines = [RedisStreamableEngine(c) for c in cells]
    try:
        factories = [RecordingFactory(), RecordingFactory()]
        for engine, factory in zip(engines[1:], factories, strict=True):
            engine.register_stream_processing("c", "t", factory)
        weights = np.arange(32 << 20, dtype=np.float64)  # 256 MB
        producer = ListProducer([shareable(w=weights)], timeout=300)
        assert engines[0].stream_objects("c", "t", {}, ["a", "b"], producer, FLContext())[0] == "OK"
        assert [r.get_return_code() for r in producer.rounds[0].values()] == ["OK", "OK"]
        for factory in factories:
            (session,) = factory.wait_ended(1, timeout=60)
            got = session.consumed[0]["w"]
            assert got.nbytes == 256 << 20
            np.testing.assert_array_equal(got, weights)
            session.consumed.clear()
    finally:
        for engine in engines:
            engine.shutdown_streamer()
        for cell in cells:
            cell.close()

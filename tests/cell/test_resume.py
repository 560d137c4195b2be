"""Resuming transfers after either side dies (in-process restarts and SIGKILLed children)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from framework.cell import BytesStream, IterStream, Message, StreamCell, StreamError, StreamFuture
from framework.cell.transport import TransferIO
from framework.connection import RedisConnection
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, child_receiver, child_sender, payload

CHUNK = SMALL.chunk_size
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(
    params=[
        pytest.param("fake_tcp", id="fake_tcp"),
        pytest.param("real", id="real", marks=pytest.mark.integration),
        pytest.param("cluster", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]),
    ]
)
def url(request: pytest.FixtureRequest) -> str:
    """A server reachable from child processes: fakeredis over TCP, redis-server, a cluster."""
    if request.param == "fake_tcp":
        value: str = request.getfixturevalue("fake_tcp_url")
        return value
    request.getfixturevalue(f"{request.param}_conn")  # flushes the server
    url: str = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return url


@pytest.fixture
def remote_conn(url: str) -> Iterator[RedisConnection]:
    """A connection to ``url``; tests request it before ``make_cell`` so cells close first."""
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


def test_restarted_cell_resumes_at_the_acknowledged_offset(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(40 * CHUNK + 99)
    sink = bytearray()
    progressed = threading.Event()

    def slow_reader(future: StreamFuture, stream: Any, resume: int) -> None:
        assert resume == 0
        while chunk := stream.read(CHUNK):
            sink.extend(chunk)
            if len(sink) >= 10 * CHUNK:
                progressed.set()
            time.sleep(0.02)

    first = StreamCell(conn, "b", config=SMALL)
    first.register_stream_cb("ch", "s", slow_reader)
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, BytesStream(data)))
    assert progressed.wait(20)
    first.close()  # abandons the transfer: it stays pending in b's inbox
    acked = TransferIO(conn, future.get_stream_id(), 60).acked("b")
    assert 0 < acked.off <= len(sink) < len(data)

    resumed: dict[str, int] = {}
    finished = threading.Event()

    def continue_reading(future: StreamFuture, stream: Any, resume: int) -> None:
        resumed["offset"] = resume
        assert stream.get_pos() == resume
        del sink[resume:]
        while chunk := stream.read(CHUNK):
            sink.extend(chunk)
        finished.set()

    make_cell(conn, "b").register_stream_cb("ch", "s", continue_reading)
    assert future.result(timeout=30) == len(data)
    assert finished.wait(10)
    assert resumed["offset"] == acked.off
    assert bytes(sink) == data


def test_a_blob_cannot_resume_at_the_receiver(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(40 * CHUNK)
    release = threading.Event()

    def slow_source() -> Iterator[bytes]:
        for offset in range(0, len(data), CHUNK):
            if offset >= 10 * CHUNK:
                release.wait(20)  # hold the rest until the receiver has restarted
            yield data[offset : offset + CHUNK]

    first = StreamCell(conn, "b", config=SMALL)
    first.register_blob_cb("ch", "t", lambda f: None)
    source = IterStream(slow_source(), size=len(data))  # send_blob also takes a sized Stream
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, source))
    io = TransferIO(conn, future.get_stream_id(), 60)
    deadline = time.monotonic() + 20
    while io.acked("b").off == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    first.close()
    make_cell(conn, "b").register_blob_cb("ch", "t", lambda f: None)
    release.set()
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "cannot resume" in str(exc)


@pytest.mark.slow
def test_sigkilled_receiver_resumes_with_identical_result(
    url: str,
    remote_conn: RedisConnection,
    tmp_path: Path,
    children: list[Any],
    make_cell: CellFactory,
) -> None:
    data = payload(60 * CHUNK + 12345)
    out = tmp_path / "received.bin"
    queue = SPAWN.Queue()
    child = SPAWN.Process(target=child_receiver, args=(url, "b", str(out), 12 * CHUNK, queue))
    child.start()
    children.append(child)
    assert queue.get(timeout=60)[0] == "ready"

    conn = remote_conn
    future = make_cell(conn, "a").send_stream("ch", "file", "b", Message({}, BytesStream(data)))
    assert queue.get(timeout=60)[0] == "received"
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    acked = TransferIO(conn, future.get_stream_id(), 60).acked("b")
    assert 0 < acked.off < len(data)

    resumed: dict[str, int] = {}
    finished = threading.Event()

    def continue_file(future: StreamFuture, stream: Any, resume: int) -> None:
        resumed["offset"] = resume
        with open(out, "r+b") as handle:
            handle.truncate(resume)
            handle.seek(resume)
            while chunk := stream.read(1 << 20):
                handle.write(chunk)
        finished.set()

    make_cell(conn, "b").register_stream_cb("ch", "file", continue_file)
    assert future.result(timeout=60) == len(data)
    assert finished.wait(10)
    assert resumed["offset"] == acked.off
    assert out.read_bytes() == data


@pytest.mark.slow
def test_dead_sender_resumes_the_same_transfer(
    url: str, remote_conn: RedisConnection, children: list[Any], make_cell: CellFactory
) -> None:
    size = 50 * CHUNK + 777
    data = payload(size)
    conn = remote_conn
    got = Collector()
    make_cell(conn, "b").register_stream_cb("ch", "file", got.stream_cb)
    queue = SPAWN.Queue()
    child = SPAWN.Process(target=child_sender, args=(url, "b", size, 20 * CHUNK, queue))
    child.start()
    children.append(child)
    kind, sid = queue.get(timeout=60)
    assert kind == "sid"
    child.join(60)
    assert child.exitcode == 3  # died mid-transfer
    assert not got.items.get(sid) or not got.items[sid].done.is_set()

    future = make_cell(conn, "sender2").resume_send(sid, Message({}, BytesStream(data)))
    assert future.get_stream_id() == sid
    assert future.get_progress() > 0
    assert future.result(timeout=60) == size
    assert got.wait(sid).data == data

    with pytest.raises(StreamError, match="cannot resume"):
        make_cell(conn, "sender3").resume_send(sid, Message({}, BytesStream(data)))


def test_resume_send_refuses_a_transfer_its_sender_ended(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(20 * CHUNK)
    future = make_cell(conn, "a").send_stream("ch", "s", "absent", Message({}, BytesStream(data)))
    future.cancel()  # races the sender's own failure (no cell "absent"): either ends it
    # Refused at the call (its keys linger a while), not by a future that fails later.
    with pytest.raises(StreamError, match=r"cannot resume: it ended \((cancel|error)\)"):
        make_cell(conn, "a2").resume_send(future.get_stream_id(), Message({}, data))

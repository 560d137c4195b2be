"""Idle timeouts measure liveness; dropped connections and a full Redis are survived or named."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from framework.cell import (
    BytesStream,
    IterStream,
    Message,
    StreamError,
    StreamFuture,
    StreamTimeout,
)
from framework.cell.assembler import encode_chunk
from framework.cell.frames import Announce, Control
from framework.cell.inbox import announce
from framework.cell.sender import TxTask
from framework.cell.transport import TransferIO
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, blocked_in, payload
from tests.stream.faults import RedisProcess

CHUNK = SMALL.chunk_size
#: Short idle timeouts keep these tests fast; heartbeats must keep a live sender inside them.
QUICK = SMALL.model_copy(update={"idle_timeout": 2.0, "heartbeat": 0.5})


@pytest.fixture(params=[pytest.param("fake", id="fake"), pytest.param("real", id="real")])
def conn2(request: pytest.FixtureRequest) -> RedisConnection:
    """fakeredis and a real redis-server (these tests wait seconds on purpose)."""
    result: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return result


def test_a_slow_live_source_outlives_the_idle_timeout(
    conn2: RedisConnection, make_cell: CellFactory
) -> None:
    pieces = [payload(1024, seed=i) for i in range(8)]
    arrivals: list[int] = []

    def live() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            # 1 KB every 0.5 s, and once a pause longer than the idle timeout.
            time.sleep(2.5 if i == 4 else 0.5)
            yield piece

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        while chunk := stream.read(1 << 20):
            arrivals.append(len(chunk))
            got.extend(chunk)

    got = bytearray()
    make_cell(conn2, "b", QUICK).register_stream_cb("ch", "s", on_stream)
    future = make_cell(conn2, "a", QUICK).send_stream(
        "ch", "s", "b", Message({}, IterStream(live()))
    )
    assert future.result(timeout=30) == 8 * 1024
    assert bytes(got) == b"".join(pieces)
    # Written within the linger, not held for a full chunk: it arrived piece by piece.
    assert len(arrivals) >= 6


def test_a_receiver_times_out_when_its_sender_is_gone(
    conn2: RedisConnection, make_cell: CellFactory
) -> None:
    # A sender that announced a stream, wrote one chunk and died: no more heartbeats.
    ann = Announce(
        sid=77, origin="dead", channel="ch", topic="s", mode="stream", size=0,
        targets=["b"], chunk_size=CHUNK, window=SMALL.window,
    )  # fmt: skip
    io = TransferIO(conn2, ann.sid, 60)
    io.create(ann)
    header, wire = encode_chunk(ann.sid, 0, 0, b"first", False)
    io.write([(0, header, wire)], None, "0-0")
    announce(conn2, "b", ann, 60)
    got = Collector()
    make_cell(conn2, "b", QUICK).register_stream_cb("ch", "s", got.stream_cb)
    item = got.wait(ann.sid, 20)
    assert bytes(item.data) == b"first"
    assert isinstance(item.error, StreamTimeout)
    assert "from 'dead'" in str(item.error)
    assert "the sender is gone" in str(item.error)


@pytest.mark.parametrize("mode", ["stream", "blob"])
def test_a_receiver_that_never_started_does_not_hold_back_the_others(
    conn2: RedisConnection, make_cell: CellFactory, mode: str
) -> None:
    # Four windows of data: the live receiver needs the sender to go on without "ghost".
    data = payload(4 * SMALL.window, seed=5)
    got = Collector()
    b = make_cell(conn2, "b", QUICK)
    b.register_stream_cb("ch", "s", got.stream_cb)
    b.register_blob_cb("ch", "s", got.blob_cb)
    sender = make_cell(conn2, "a", QUICK)
    message = Message({}, BytesStream(data) if mode == "stream" else data)
    send = sender.send_stream if mode == "stream" else sender.send_blob
    future = send("ch", "s", ["b", "ghost"], message)
    item = got.wait(future.get_stream_id(), 20)
    assert item.error is None
    assert bytes(item.data) == data
    with pytest.raises(StreamError, match=r"reached \['b'\] whole, but not \['ghost'\]") as err:
        future.result(timeout=20)
    assert "neither consumed nor said it is alive" in str(err.value)


def test_a_sender_told_a_receiver_is_gone_goes_on_without_it(
    conn2: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(4 * SMALL.window, seed=6)
    got = Collector()
    make_cell(conn2, "b", SMALL).register_blob_cb("ch", "s", got.blob_cb)
    future = make_cell(conn2, "a", SMALL).send_blob("ch", "s", ["b", "ghost"], Message({}, data))
    time.sleep(0.5)
    assert not future.done()  # held back by "ghost" (idle timeout 20 s)
    task = future.task_handle
    assert isinstance(task, TxTask)
    task.give_up_on("ghost", "its engine is gone")
    item = got.wait(future.get_stream_id(), 10)
    assert bytes(item.data) == data
    with pytest.raises(StreamError, match="its engine is gone"):
        future.result(timeout=10)


# -- dropped connections (real redis-server: CLIENT KILL) -------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("side", ["receiver", "sender"])
def test_client_kill_mid_transfer_delivers_identical_bytes(
    redis_server: EmbeddedRedis, real_conn: RedisConnection, make_cell: CellFactory, side: str
) -> None:
    data = payload(24 * CHUNK + 11)
    half = 8 * CHUNK
    hold_source, hold_reader = threading.Event(), threading.Event()
    got = bytearray()

    def source() -> Iterator[bytes]:
        for off in range(0, len(data), CHUNK):
            if off == half and side == "receiver":
                hold_source.wait(20)  # the receiver drains and blocks in XREAD
            yield data[off : off + CHUNK]

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        while chunk := stream.read(CHUNK):
            got.extend(chunk)
            if len(got) == CHUNK and side == "sender":
                hold_reader.wait(20)  # the sender fills its window and blocks in XREAD

    with (
        RedisConnection.from_url(redis_server.url) as rx_conn,
        RedisConnection.from_url(redis_server.url) as tx_conn,
    ):
        make_cell(rx_conn, "b").register_stream_cb("ch", "s", on_stream)
        future = make_cell(tx_conn, "a").send_stream(
            "ch", "s", "b", Message({}, IterStream(source(), size=len(data)))
        )
        victim = rx_conn if side == "receiver" else tx_conn
        deadline = time.monotonic() + 20
        while not (blocked := blocked_in(real_conn.client, victim, "xread")):
            assert time.monotonic() < deadline, f"the {side} never blocked in XREAD"
            time.sleep(0.02)
        for addr in blocked:
            real_conn.client.client_kill(addr)
        hold_source.set()
        hold_reader.set()
        assert future.result(timeout=30) == len(data)
        deadline = time.monotonic() + 10
        while len(got) < len(data) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert bytes(got) == data


def _one_chunk_sent(
    conn: RedisConnection, make_cell: CellFactory
) -> tuple[threading.Event, Collector, StreamFuture]:
    """A stream from "a" to "b" whose first chunk is written; the rest waits for the event."""
    release = threading.Event()

    def source() -> Iterator[bytes]:
        yield payload(CHUNK)
        release.wait(20)
        for _ in range(40):
            yield payload(CHUNK)

    got = Collector()
    make_cell(conn, "b").register_stream_cb("ch", "s", got.stream_cb, read_size=CHUNK)
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, IterStream(source())))
    deadline = time.monotonic() + 20
    while future.get_progress() < CHUNK:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return release, got, future


@pytest.mark.integration
def test_out_of_memory_reaches_both_sides_with_its_cause(
    redis_server: EmbeddedRedis, real_conn: RedisConnection, make_cell: CellFactory
) -> None:
    release, got, future = _one_chunk_sent(real_conn, make_cell)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used + 100_000)
        admin.config_set("maxmemory-policy", "noeviction")
        release.set()
        exc = future.exception(timeout=20)
        item = got.wait(future.get_stream_id(), 20)
        # The failed transfer's frames are gone at once, not kept to refuse the next one.
        assert not admin.exists(TransferIO(real_conn, future.get_stream_id(), 60).data)
        retry = make_cell(real_conn, "a2").send_stream(
            "ch", "s", "b", Message({}, BytesStream(b"x" * 10_000))
        )
        assert retry.result(timeout=20) == 10_000
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    assert isinstance(exc, StreamError)
    assert "OutOfMemoryError" in str(exc)
    assert "maxmemory" in str(exc)
    assert item.error is not None
    assert "OutOfMemoryError" in str(item.error)
    assert "maxmemory" in str(item.error)


@pytest.mark.integration
def test_a_sender_refused_by_a_full_redis_tells_its_receivers_once_it_can(
    redis_server: EmbeddedRedis, real_conn: RedisConnection, make_cell: CellFactory
) -> None:
    """Redis refuses every write for a second (maxmemory 1): the sender fails at once, and
    its error notice, refused too, was dropped; the receiver then waited out its idle
    timeout (20 s here) and blamed the sender's silence."""
    release, got, future = _one_chunk_sent(real_conn, make_cell)
    admin = redis.Redis.from_url(redis_server.url)
    try:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        release.set()
        exc = future.exception(timeout=20)
        started = time.monotonic()
        time.sleep(1.0)
        admin.config_set("maxmemory", 0)
        item = got.wait(future.get_stream_id(), 20)
    finally:
        admin.config_set("maxmemory", 0)
        admin.close()
    assert time.monotonic() - started < 10  # not the receiver's idle timeout (20 s)
    assert "OutOfMemoryError" in str(exc)
    assert item.error is not None
    assert "OutOfMemoryError" in str(item.error)


def _fault_while_the_receiver_lags(
    tmp_path: Path, make_cell: CellFactory, fault: Callable[[RedisProcess], None]
) -> tuple[BaseException | None, BaseException]:
    """Inject ``fault`` while the sender waits on a full window and its receiver reads
    nothing; the errors both sides end with (the receiver's once it reads again)."""
    hold, seen = threading.Event(), []

    def held_reader(future: StreamFuture, stream: Any, resume: int) -> None:
        try:
            hold.wait(20)
            while stream.read(1 << 20):
                pass
        except BaseException as exc:
            seen.append(exc)
            raise

    server = RedisProcess(tmp_path).start()
    conn = RedisConnection.from_url(server.url)
    try:
        make_cell(conn, "b", QUICK).register_stream_cb("ch", "s", held_reader)
        future = make_cell(conn, "a", QUICK).send_stream(
            "ch", "s", "b", Message({}, IterStream([payload(16 * CHUNK)]))
        )
        deadline = time.monotonic() + 20
        while future.get_progress() < QUICK.window:
            assert time.monotonic() < deadline, "the sender never filled its window"
            time.sleep(0.01)
        fault(server)
        hold.set()
        exc = future.exception(timeout=20)
        deadline = time.monotonic() + 20
        while not seen:
            assert time.monotonic() < deadline, "the receiver was never told"
            time.sleep(0.01)
    finally:
        hold.set()
        conn.close()
        server.close()
    return exc, seen[0]


def _fill_memory(server: RedisProcess) -> None:
    with server.admin() as admin:
        # Full now; dropping the transfer's frames (over 300 KB) makes room for the
        # sender's notice to the receiver.
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", used - 200_000)


@pytest.mark.integration
def test_out_of_memory_while_the_receiver_lags_reaches_both_sides_with_its_cause(
    tmp_path: Path, make_cell: CellFactory
) -> None:
    # The receiver cannot post its acks: the waiting sender's heartbeat meets the
    # refusal, instead of both sides timing out blaming each other.
    exc, seen = _fault_while_the_receiver_lags(tmp_path, make_cell, _fill_memory)
    assert isinstance(exc, StreamError)
    assert "maxmemory" in str(exc), exc
    assert "maxmemory" in str(seen), seen


@pytest.mark.integration
def test_a_restart_that_loses_unread_chunks_fails_both_sides_naming_them(
    tmp_path: Path, make_cell: CellFactory
) -> None:
    # Without persistence the frames the receiver had not read are gone. Before, the
    # receiver timed out saying the sender was gone, and the sender said it back.
    exc, seen = _fault_while_the_receiver_lags(
        tmp_path, make_cell, lambda server: server.restart(0.2)
    )
    sent = -(-QUICK.window // CHUNK)  # chunks written until the window was full
    lost = f"Redis no longer holds chunks 0 to {sent - 1} (bytes 0 to {sent * CHUNK})"
    assert isinstance(exc, StreamError)
    assert lost in str(exc), exc
    assert lost in str(seen), seen


# -- a receiver busy with the data, not reading: alive all the same ----------------------------

#: Idle timeout 1 s: a callback that works 2.5 s without reading outlasts it twice over.
BUSY = SMALL.model_copy(update={"idle_timeout": 1.0, "heartbeat": 0.25})


@pytest.mark.parametrize("when", ["after the last byte", "between reads"])
def test_a_callback_working_past_the_idle_timeout_is_waited_for(
    conn2: RedisConnection, make_cell: CellFactory, when: str
) -> None:
    data = payload(4 * CHUNK)
    got = bytearray()

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        while chunk := stream.read(CHUNK):
            got.extend(chunk)
            if when == "between reads" and len(got) == CHUNK:
                time.sleep(2.5)
        if when == "after the last byte":
            time.sleep(2.5)  # storing it, say: the final ack waits for this return

    make_cell(conn2, "b", BUSY).register_stream_cb("ch", "s", on_stream)
    future = make_cell(conn2, "a", BUSY).send_stream("ch", "s", "b", Message({}, BytesStream(data)))
    # Before: StreamTimeout, "no receiver made progress for 1 s", from a live receiver.
    assert future.result(timeout=30) == len(data)
    assert bytes(got) == data


def test_copies_of_a_receivers_heartbeat_do_not_keep_a_sender_waiting(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # Nobody receives: one authentic-looking heartbeat of "b", then copies of it.
    future = make_cell(conn, "a", BUSY).send_stream(
        "ch", "s", "b", Message({}, BytesStream(payload(8 * CHUNK)))
    )
    io = TransferIO(conn, future.get_stream_id(), 60)
    io.post(Control(kind="beat", role="rx", sender="b", seq=1))
    ((_, fields),) = [
        (eid, fields)
        for eid, fields in conn.client.xrange(io.ack)
        if any(b'"role":"rx"' in value for value in fields.values())
    ]
    stop = threading.Event()

    def replay() -> None:
        deadline = time.monotonic() + 10  # bounded, so a sender that waits ends too
        while time.monotonic() < deadline and not stop.wait(0.1):
            conn.client.xadd(io.ack, fields)

    thread = threading.Thread(target=replay)
    thread.start()
    try:
        started = time.monotonic()
        exc = future.exception(timeout=20)
        assert isinstance(exc, StreamTimeout)
        assert time.monotonic() - started < 5
    finally:
        stop.set()
        thread.join()


def test_a_transfer_that_failed_before_its_receiver_started_is_not_delivered(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Its keys outlive it for a minute; a receiver starting then used to get a failure."""
    caplog.set_level(logging.INFO, logger="framework.cell")
    sender = make_cell(conn, "a", QUICK)
    future = sender.send_stream("ch", "s", "late", Message({}, BytesStream(payload(CHUNK))))
    assert isinstance(future.exception(timeout=20), StreamTimeout)  # nobody received it
    sid = future.get_stream_id()
    assert TransferIO(conn, sid, 60).ended() == "error"
    called: list[Any] = []
    late = make_cell(conn, "late", QUICK)
    late.register_stream_cb("ch", "s", lambda *args: called.append(args))
    deadline = time.monotonic() + 20
    while f"Stream {sid} ended (error) before cell 'late' read any" not in caplog.text:
        assert time.monotonic() < deadline, "the ended transfer was never looked at"
        time.sleep(0.02)
    # The next transfer is delivered as usual.
    got = Collector()
    late.register_stream_cb("ch", "t", got.stream_cb)
    again = sender.send_stream("ch", "t", "late", Message({}, BytesStream(b"fresh")))
    assert again.result(timeout=20) == 5
    assert bytes(got.wait(again.get_stream_id(), 20).data) == b"fresh"
    assert called == []

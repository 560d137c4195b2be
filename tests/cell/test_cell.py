"""StreamCell end to end on fakeredis and a real redis-server (``conn``)."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime
from typing import Any

import pytest

from framework.cell import (
    BytesStream,
    CellConfig,
    IterStream,
    Message,
    Stream,
    StreamCancelled,
    StreamCell,
    StreamError,
    StreamFuture,
    StreamTimeout,
)
from framework.cell.frames import DATA_FIELD
from framework.cell.sender import TxTask
from framework.cell.transport import TransferIO
from framework.connection import RedisConnection
from framework.exceptions import ChecksumError, ClosedError, ConfigurationError, EncryptionError
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, payload

CHUNK = SMALL.chunk_size
SIZES = [0, 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7]


def xfer_keys(conn: RedisConnection) -> list[bytes]:
    return list(conn.client.scan_iter(match=f"{conn.keys.prefix}:xfer:*"))


@pytest.mark.parametrize("size", SIZES, ids=["0B", "1B", "chunk", "chunk+1", "5chunks+7"])
@pytest.mark.parametrize("mode", ["stream", "blob"])
def test_round_trip_sizes(
    conn: RedisConnection, make_cell: CellFactory, size: int, mode: str
) -> None:
    data = payload(size)
    sender, receiver = make_cell(conn, "a"), make_cell(conn, "b")
    got = Collector()
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    receiver.register_blob_cb("ch", "b", got.blob_cb)
    headers = {"名前": "ünïcödé ✓", "n": 1}
    if mode == "stream":
        future = sender.send_stream("ch", "s", "b", Message(headers, BytesStream(data)))
    else:
        future = sender.send_blob("ch", "b", "b", Message(headers, data))
    assert future.result(timeout=30) == size
    item = got.wait(future.get_stream_id())
    assert bytes(item.data) == data
    assert item.future is not None
    topic = "s" if mode == "stream" else "b"
    nvflare = {"cn__origin": "a", "cn__channel": "ch", "cn__topic": topic}
    assert item.future.get_headers() == {**headers, **nvflare}
    assert item.future.result(timeout=5) == (size if mode == "stream" else data)
    assert future.get_progress() == size
    assert item.future.get_progress() == size
    assert xfer_keys(conn) == []  # removed once every receiver acknowledged


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stream", "blob"])
def test_64_mb(conn: RedisConnection, make_cell: CellFactory, mode: str) -> None:
    data = payload(64 << 20)
    config = CellConfig()
    sender, receiver = make_cell(conn, "a", config), make_cell(conn, "b", config)
    got = Collector()
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    receiver.register_blob_cb("ch", "b", got.blob_cb)
    if mode == "stream":
        future = sender.send_stream("ch", "s", "b", Message({}, BytesStream(data)))
    else:
        future = sender.send_blob("ch", "b", "b", Message({}, data))
    assert future.result(timeout=100) == len(data)
    assert got.wait(future.get_stream_id(), 60).data == data


def test_announcement_waits_for_a_cell_started_later(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(3 * CHUNK)
    future = make_cell(conn, "a").send_blob("ch", "t", "late", Message({}, data))
    time.sleep(0.2)
    got = Collector()
    make_cell(conn, "late").register_blob_cb("ch", "t", got.blob_cb)
    assert future.result(timeout=30) == len(data)
    assert got.wait(future.get_stream_id()).data == data


def test_iterator_source_of_unknown_size(conn: RedisConnection, make_cell: CellFactory) -> None:
    pieces = [payload(n, seed=n) for n in (5, 70_000, 1, 200_000)]
    sender, receiver = make_cell(conn, "a"), make_cell(conn, "b")
    got = Collector()
    receiver.register_stream_cb("ch", "s", got.stream_cb, read_size=1000)
    future = sender.send_stream("ch", "s", "b", Message({}, IterStream(pieces)))
    assert future.result(timeout=30) == sum(map(len, pieces))
    assert got.wait(future.get_stream_id()).data == b"".join(pieces)


class _RefillingSource(Stream):
    """Reads into one buffer it refills on every call, as a ``readinto`` loop does."""

    def __init__(self, data: bytes, piece: int, as_list: bool = False) -> None:
        super().__init__(len(data))
        self.file, self.piece, self.as_list = io.BytesIO(data), piece, as_list
        self.buf = bytearray(piece)

    def read(self, size: int) -> Any:
        n = self.file.readinto(memoryview(self.buf)[: min(size, self.piece)])
        self.pos += n
        return list(self.buf[:n]) if self.as_list else memoryview(self.buf)[:n]


@pytest.mark.parametrize("piece", [4096, CHUNK], ids=["small-reads", "chunk-reads"])
@pytest.mark.parametrize("mode", ["stream", "blob"])
def test_a_source_that_refills_its_buffer_arrives_intact(
    conn: RedisConnection, make_cell: CellFactory, mode: str, piece: int
) -> None:
    # The sender holds reads (queued ahead, in the chunk being filled, in the window)
    # after the next read() refilled the buffer they point into.
    data = payload(6 * CHUNK + 5)
    sender, receiver = make_cell(conn, "a"), make_cell(conn, "b")
    got = Collector()
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    receiver.register_blob_cb("ch", "b", got.blob_cb)
    send = sender.send_stream if mode == "stream" else sender.send_blob
    future = send("ch", mode[0], "b", Message({}, _RefillingSource(data, piece)))
    assert future.result(timeout=30) == len(data)
    assert bytes(got.wait(future.get_stream_id()).data) == data


def test_a_source_may_return_lists_of_byte_values(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(CHUNK + 3)
    sender, receiver = make_cell(conn, "a"), make_cell(conn, "b")
    got = Collector()
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    source = _RefillingSource(data, 1000, as_list=True)
    future = sender.send_stream("ch", "s", "b", Message({}, source))
    assert future.result(timeout=30) == len(data)
    assert bytes(got.wait(future.get_stream_id()).data) == data


def test_fan_out_writes_once_and_every_target_gets_a_copy(
    conn: RedisConnection, make_cell: CellFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[int] = []
    original = TransferIO.write

    def counting(self: TransferIO, frames: Any, *args: Any) -> Any:
        written.extend(seq for seq, _, _ in frames)
        return original(self, frames, *args)

    monkeypatch.setattr(TransferIO, "write", counting)
    data = payload(12 * CHUNK + 5)
    results: dict[str, bytes] = {}

    def on_blob(future: StreamFuture, name: str) -> None:
        results[name] = bytes(future.result())

    for name in ("t1", "t2", "t3"):
        make_cell(conn, name).register_blob_cb("ch", "fan", on_blob, name)
    future = make_cell(conn, "src").send_blob("ch", "fan", ["t1", "t2", "t3"], Message({}, data))
    assert future.result(timeout=60) == len(data)
    # Each target's final ack waits for its callback's return.
    assert results == {"t1": data, "t2": data, "t3": data}
    assert sorted(written) == list(range(13))  # every chunk went into Redis exactly once


def test_sender_cancel_ends_the_receiver_within_a_second(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    started, failed = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        stream.read(CHUNK)
        started.set()
        try:
            while stream.read(CHUNK):
                pass
        except StreamError as exc:
            seen["exc"], seen["at"] = exc, time.monotonic()
            failed.set()

    make_cell(conn, "b").register_stream_cb("ch", "s", on_stream)
    source = IterStream(iter(lambda: payload(CHUNK), None))  # endless
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, source))
    assert started.wait(20)
    cancelled_at = time.monotonic()
    assert future.cancel()
    with pytest.raises(StreamCancelled):
        future.result(timeout=1)
    assert failed.wait(5)
    assert isinstance(seen["exc"], StreamCancelled)
    assert seen["at"] - cancelled_at < 1.0


@pytest.mark.parametrize("how", ["stream.close", "future.cancel"])
def test_receiver_close_ends_the_sender_within_a_second(
    conn: RedisConnection, make_cell: CellFactory, how: str
) -> None:
    closed_at: list[float] = []
    after: list[BaseException] = []

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        stream.read(CHUNK)
        closed_at.append(time.monotonic())
        if how == "stream.close":
            stream.close()
        else:
            assert future.cancel()
        try:
            stream.read(CHUNK)
        except StreamCancelled as exc:
            after.append(exc)

    make_cell(conn, "b").register_stream_cb("ch", "s", on_stream)
    source = IterStream(iter(lambda: payload(CHUNK), None))
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, source))
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamCancelled)
    assert f"closed the stream after {CHUNK} bytes" in str(exc)  # what it read, not acked
    assert time.monotonic() - closed_at[0] < 1.0
    deadline = time.monotonic() + 5
    while not after and time.monotonic() < deadline:
        time.sleep(0.01)
    assert after  # reading after close raises


def test_the_window_bounds_what_waits_in_redis(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    future = make_cell(conn, "a").send_stream(
        "ch", "s", "absent", Message({}, BytesStream(payload(40 * CHUNK)))
    )
    io = TransferIO(conn, future.get_stream_id(), 60)
    full = SMALL.window // CHUNK + 1  # it may start a chunk while below the limit
    deadline = time.monotonic() + 10
    while future.get_progress() < full * CHUNK and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # nobody reads: nothing more may be written
    assert conn.client.xlen(io.data) == full
    assert future.get_progress() == full * CHUNK
    future.cancel()


def test_a_sender_waits_for_acks_only_while_its_window_is_full(
    conn: RedisConnection, make_cell: CellFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default proportions, scaled down: a receiver reads 8 chunks at a time and,
    # caught up, has no ack due; the ack that reopened the window came with a write.
    config = CellConfig(
        chunk_size=1023, window=16 * 1024, ack_interval=8 * 1024, batch_bytes=16 * 1024
    )
    waits: list[int] = []
    await_controls = TxTask._await_controls

    def spy(task: TxTask) -> None:
        if task._final is None:  # still sending (waiting for the final acks is fine)
            waits.append(task.window.room())
        await_controls(task)

    monkeypatch.setattr(TxTask, "_await_controls", spy)
    got = Collector()

    def late_reader(future: StreamFuture, stream: Any, resume: int) -> None:
        time.sleep(0.3)  # the window fills before the first read, however fast the host
        got.stream_cb(future, stream, resume, 1 << 20)

    make_cell(conn, "b").register_stream_cb("ch", "s", late_reader)
    data = payload(256 * 1023)
    future = make_cell(conn, "a", config).send_stream(
        "ch", "s", "b", Message({}, BytesStream(data))
    )
    assert future.result(timeout=60) == len(data)
    assert bytes(got.wait(future.get_stream_id()).data) == data
    assert waits  # the window did fill
    assert max(waits) <= 0, f"waited for acks with room for {max(waits)} bytes"


def test_callback_error_crosses_as_type_and_message(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        stream.read(10)
        raise ValueError("bad input ✗")

    make_cell(conn, "b").register_stream_cb("ch", "s", on_stream)
    future = make_cell(conn, "a").send_stream(
        "ch", "s", "b", Message({}, BytesStream(payload(4 * CHUNK)))
    )
    exc = future.exception(timeout=20)
    assert type(exc) is StreamError
    assert "ValueError: bad input ✗" in str(exc)


@pytest.mark.parametrize("mode", ["blob", "stream"])
def test_corrupted_chunk_is_detected(
    conn: RedisConnection, make_cell: CellFactory, mode: str
) -> None:
    config = SMALL.model_copy(update={"window": 64 * CHUNK})
    data = payload(6 * CHUNK)
    sender = make_cell(conn, "a", config)
    if mode == "blob":
        future = sender.send_blob("ch", "t", "b", Message({}, data))
    else:
        future = sender.send_stream("ch", "t", "b", Message({}, BytesStream(data)))
    io = TransferIO(conn, future.get_stream_id(), 60)
    deadline = time.monotonic() + 10
    while conn.client.xlen(io.data) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    entries = conn.client.xrange(io.data)
    conn.client.delete(io.data)
    for eid, fields in entries:  # rewrite the stream with one flipped bit in chunk 3
        if eid == b"4-0":
            body = bytearray(fields[DATA_FIELD])
            body[100] ^= 0x01
            fields[DATA_FIELD] = bytes(body)
        conn.client.xadd(io.data, fields, id=eid)
    receiver = make_cell(conn, "b")
    errors: list[BaseException] = []
    received: list[bytes] = []

    def on_stream(future: Any, stream: Any, resume: int) -> None:
        while chunk := stream.read(CHUNK):
            received.append(bytes(chunk))

    receiver.register_blob_cb("ch", "t", lambda f: errors.append(AssertionError("called")))
    receiver.register_stream_cb("ch", "t", on_stream)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert isinstance(exc.__cause__, ChecksumError)
    assert "crc32" in str(exc)
    assert "chunk 3" in str(exc)
    assert errors == []  # a failed blob never reaches the callback
    got = b"".join(received)  # a stream never hands out a byte of the bad chunk or after
    assert len(got) <= 3 * CHUNK
    assert data.startswith(got)


def test_a_sender_times_out_when_no_receiver_reads(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    quick = SMALL.model_copy(update={"idle_timeout": 0.5, "heartbeat": 0.2})
    future = make_cell(conn, "a", quick).send_stream(
        "ch", "s", "nobody", Message({}, BytesStream(payload(8 * CHUNK)))
    )
    exc = future.exception(timeout=10)
    assert isinstance(exc, StreamTimeout)
    assert "nobody" in str(exc)


def test_failed_transfer_keys_expire_soon(conn: RedisConnection, make_cell: CellFactory) -> None:
    future = make_cell(conn, "a").send_blob("ch", "t", "absent", Message({}, payload(9 * CHUNK)))
    future.cancel()
    io = TransferIO(conn, future.get_stream_id(), 60)
    deadline = time.monotonic() + 5
    while conn.client.ttl(io.meta) > 60 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 0 < conn.client.ttl(io.meta) <= 60  # kept briefly so receivers learn why


def test_keys_carry_a_ttl_while_alive(conn: RedisConnection, make_cell: CellFactory) -> None:
    future = make_cell(conn, "a").send_blob("ch", "t", "absent", Message({}, payload(CHUNK)))
    io = TransferIO(conn, future.get_stream_id(), 1)
    deadline = time.monotonic() + 5
    while conn.client.ttl(io.data) < 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    for key in (io.data, io.meta, conn.keys.inbox("absent")):
        assert 0 < conn.client.ttl(key) <= SMALL.inbox_ttl
    future.cancel()


def test_secure_transfer(conn: RedisConnection, make_cell: CellFactory) -> None:
    key = b"0123456789abcdef"
    data = payload(3 * CHUNK + 1)
    got = Collector()
    make_cell(conn, "b", key=key).register_blob_cb("ch", "t", got.blob_cb)
    sender = make_cell(conn, "a", key=key)
    future = sender.send_blob("ch", "t", "b", Message({}, data), secure=True)
    assert future.result(timeout=30) == len(data)
    assert got.wait(future.get_stream_id()).data == data
    with pytest.raises(EncryptionError, match="needs a shared key"):
        make_cell(conn, "nokey").send_blob("ch", "t", "b", Message({}, data), secure=True)


def test_secure_transfer_to_a_receiver_without_the_key_fails(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # The keyless receiver cannot sign its refusal. The sender takes it as a refusal all
    # the same, from a target that acknowledged nothing: before, it waited out its idle
    # timeout (60 s) and then blamed the receiver for making no progress.
    patient = SMALL.model_copy(update={"idle_timeout": 60.0})
    make_cell(conn, "b").register_blob_cb("ch", "t", lambda f: None)
    sender = make_cell(conn, "a", patient, key=b"k" * 32)
    future = sender.send_blob("ch", "t", "b", Message({}, payload(CHUNK)), secure=True)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "receiver 'b' refused the transfer (EncryptionError: secure=True needs a shared key" in (
        str(exc)
    )
    assert "in a notice not authenticated with the transfer's key" in str(exc)


@pytest.mark.parametrize("secure", [True, False])
def test_a_transfer_to_a_receiver_with_another_key_fails_at_once_saying_so(
    conn: RedisConnection, make_cell: CellFactory, secure: bool
) -> None:
    """Before, the receiver dropped the announcement without a word; the sender waited out
    its idle timeout, then said that no receiver made progress."""
    patient = SMALL.model_copy(update={"idle_timeout": 60.0})
    got = Collector()
    make_cell(conn, "b", key=b"b" * 32).register_blob_cb("ch", "t", got.blob_cb)
    sender = make_cell(conn, "a", patient, key=b"a" * 32)
    future = sender.send_blob("ch", "t", "b", Message({}, payload(CHUNK)), secure=secure)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "Cell 'b' could not authenticate the announcement with its key" in str(exc)
    assert got.items == {}


def test_an_unsigned_refusal_does_not_stop_a_fan_out_to_the_others(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    patient = SMALL.model_copy(update={"idle_timeout": 60.0})
    good = Collector()
    make_cell(conn, "b", key=b"a" * 32).register_blob_cb("ch", "t", good.blob_cb)
    make_cell(conn, "c", key=b"c" * 32).register_blob_cb("ch", "t", lambda f: None)
    sender = make_cell(conn, "a", patient, key=b"a" * 32)
    data = payload(3 * CHUNK)
    future = sender.send_blob("ch", "t", ["b", "c"], Message({}, data), secure=True)
    exc = future.exception(timeout=20)
    assert "reached ['b'] whole, but not ['c']" in str(exc)
    assert "could not authenticate the announcement" in str(exc)
    assert bytes(good.wait(future.get_stream_id()).data) == data


def test_bad_arguments(conn: RedisConnection, make_cell: CellFactory) -> None:
    cell = make_cell(conn, "a")
    with pytest.raises(StreamError, match="needs a Stream payload"):
        cell.send_stream("ch", "t", "b", Message({}, b"bytes"))
    with pytest.raises(StreamError, match="JSON"):
        cell.send_blob("ch", "t", "b", Message({"x": object()}, b"1"))
    with pytest.raises(ConfigurationError, match="key must be an AES key of 16, 24 or 32 bytes"):
        StreamCell(conn, "short-key", key=b"short")
    for send in (cell.send_blob, cell.send_stream):
        with pytest.raises(StreamError, match=r"takes a Message\(headers, payload\), not a bytes"):
            send("ch", "t", "b", b"xx")  # type: ignore[arg-type]
    for channel, topic, bad in ((None, "t", "channel"), ("ch", 5, "topic"), ("", "t", "channel")):
        for send in (cell.send_blob, cell.send_stream):
            with pytest.raises(ConfigurationError, match=f"{bad} must be a non-empty string"):
                send(channel, topic, "b", Message({}, BytesStream(b"x")))  # type: ignore[arg-type]
    for target in (None, 3, b"b"):
        with pytest.raises(ConfigurationError, match="target must be a cell name or a list"):
            cell.send_stream("ch", "t", target, Message({}, BytesStream(b"x")))  # type: ignore[arg-type]
    for size in (-1, "10", 1.5):
        source = BytesStream(b"x")
        source.size = size  # type: ignore[assignment]
        with pytest.raises(StreamError, match=r"BytesStream.get_size\(\) returned"):
            cell.send_stream("ch", "t", "b", Message({}, source))
    assert cell.get_chunk_size() == CHUNK
    cell.close()
    cell.close()
    with pytest.raises(ClosedError):
        cell.send_blob("ch", "t", "b", Message({}, b"1"))


def test_a_target_that_cannot_be_named_announces_nothing_to_the_others(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # Checked before anything is written: "good" would otherwise wait for a sender that
    # never starts, until its idle timeout.
    sender = make_cell(conn, "a")
    with pytest.raises(ConfigurationError, match=r"bad\{name"):
        sender.send_stream("ch", "t", ["good", "bad{name"], Message({}, BytesStream(b"x")))
    assert not conn.client.exists(conn.keys.inbox("good"))
    assert xfer_keys(conn) == []


def test_a_read_of_no_bytes_is_refused(conn: RedisConnection, make_cell: CellFactory) -> None:
    sender, receiver = make_cell(conn, "a"), make_cell(conn, "b")
    errors: list[BaseException] = []

    def callback(future: StreamFuture, stream: Any, resume: int) -> None:
        for size in (0, -1):
            try:
                stream.read(size)
            except ValueError as exc:
                errors.append(exc)
        while stream.read(1 << 20):
            pass

    receiver.register_stream_cb("ch", "s", callback)
    future = sender.send_stream("ch", "s", "b", Message({}, BytesStream(b"abc")))
    assert future.result(timeout=30) == 3
    assert [str(e).split(":")[0] for e in errors] == [
        f"read() of stream {future.get_stream_id()} from 'a' needs a size of at least 1 byte, "
        f"not {n}"
        for n in (0, -1)
    ]


def test_a_stream_timeout_is_not_a_timeout_error() -> None:
    # result(timeout) raises TimeoutError while a transfer runs; a loop waiting on that
    # must not spin forever on a transfer that failed.
    assert not issubclass(StreamTimeout, TimeoutError)


def test_closing_a_cell_cancels_its_sends(conn: RedisConnection) -> None:
    cell = StreamCell(conn, "a", config=SMALL)
    future = cell.send_stream("ch", "t", "absent", Message({}, BytesStream(payload(20 * CHUNK))))
    with cell:
        pass
    assert isinstance(future.exception(timeout=5), StreamCancelled)


def test_cancels_racing_the_end_report_what_happened(
    real_conn: RedisConnection, make_cell: CellFactory
) -> None:
    """Cancels at every point of small transfers: a future is cancelled or succeeded,
    never both; a cancelled one the receiver got whole says that it may have been."""
    delivered: set[int] = set()
    receiver = make_cell(real_conn, "rcv")
    receiver.register_blob_cb("c", "b", lambda f: delivered.add(f.headers["i"]))
    sender = make_cell(real_conn, "snd")
    cancelled: dict[int, str] = {}
    for i in range(120):
        future = sender.send_blob("c", "b", "rcv", Message({"i": i}, b"x" * 1000))
        time.sleep(0.0005 * (i % 10))
        won = future.cancel()
        assert future.cancelled() is won
        error = future.exception(timeout=20)
        if won:
            assert isinstance(error, StreamCancelled), error
            cancelled[i] = str(error)
        else:
            assert error is None
            assert future.result(0) == 1000
    time.sleep(1.0)  # blob callbacks of the last transfers
    assert cancelled  # the sleeps above let some cancels win
    for i in delivered & set(cancelled):
        assert "a receiver may have got it whole" in cancelled[i]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        (b"bytes", "bytes is not JSON serializable"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        (float("inf"), "Out of range float values are not JSON compliant"),
        ({1, 2}, "set is not JSON serializable"),
        (datetime(2020, 1, 1), "datetime is not JSON serializable"),
    ],
    ids=["bytes", "nan", "inf", "set", "datetime"],
)
def test_headers_that_json_would_change_are_refused_at_the_call(
    fake_conn: RedisConnection, make_cell: CellFactory, value: Any, said: str
) -> None:
    """Before, they arrived changed: b"bytes" as 'bytes', NaN as None, a set as a list."""
    sender = make_cell(fake_conn, "a")
    with pytest.raises(StreamError, match="headers must be JSON-serialisable") as info:
        sender.send_blob("c", "t", "b", Message({"k": value}, b"x"))
    assert said in str(info.value)
    assert not fake_conn.client.exists(fake_conn.keys.inbox("b"))  # nothing announced

"""Forged and malformed input, errors that must reach the sender, NVFlare call forms."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from crc32c import crc32c

from framework.cell import (
    BlobSizeError,
    BytesStream,
    CellConfig,
    IterStream,
    Message,
    MessageHeaderKey,
    Stream,
    StreamCancelled,
    StreamCell,
    StreamError,
    StreamFuture,
)
from framework.cell.auth import BadPositionError, ControlAuth
from framework.cell.frames import (
    ANNOUNCE_FIELD,
    CONTROL_FIELD,
    DATA_FIELD,
    HEADER_FIELD,
    MAC_FIELD,
    Announce,
    ChunkHeader,
    Control,
)
from framework.cell.inbox import Inbox, announce
from framework.cell.receiver import RxTransfer
from framework.cell.transport import TransferIO
from framework.cell.window import Position
from framework.cell.worker import receive_blob
from framework.connection import RedisConnection
from framework.exceptions import (
    BackendError,
    ConfigurationError,
    EncryptionError,
    MalformedFrameError,
    StreamTimeout,
)
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, payload

CHUNK = SMALL.chunk_size
KEY = b"0123456789abcdef0123456789abcdef"


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


# -- errors always reach the sender -----------------------------------------------------------


def test_a_callback_raising_after_the_last_byte_fails_the_sender(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(3 * CHUNK + 5)

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        while stream.read(CHUNK):
            pass
        raise RuntimeError("could not store the model ✗")

    make_cell(conn, "b").register_stream_cb("ch", "s", on_stream)
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, BytesStream(data)))
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "Receiver 'b'" in str(exc)
    assert "RuntimeError: could not store the model ✗" in str(exc)


def test_a_blob_callback_raising_fails_the_sender(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    data = payload(2 * CHUNK + 7)
    seen: list[int] = []

    def on_blob(future: StreamFuture) -> None:
        seen.append(len(future.result()))  # the whole blob, then the failure
        raise RuntimeError("could not load the weights ✗")

    make_cell(conn, "b").register_blob_cb("ch", "b", on_blob)
    future = make_cell(conn, "a").send_blob("ch", "b", "b", Message({}, data))
    # Before: the sender's future succeeded, and the error was only logged.
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "Receiver 'b'" in str(exc)
    assert "RuntimeError: could not load the weights ✗" in str(exc)
    assert seen == [len(data)]


def test_the_sender_of_a_blob_hears_of_success_once_its_callback_returned(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    returned = threading.Event()

    def on_blob(future: StreamFuture) -> None:
        time.sleep(0.5)
        returned.set()

    make_cell(conn, "b").register_blob_cb("ch", "b", on_blob)
    future = make_cell(conn, "a").send_blob("ch", "b", "b", Message({}, payload(CHUNK)))
    assert future.result(timeout=20) == CHUNK
    assert returned.is_set()


def test_the_receiver_stream_reports_closed(conn: RedisConnection, make_cell: CellFactory) -> None:
    seen: list[bool] = []
    streams: list[Any] = []

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        streams.append(stream)
        seen.append(stream.closed)
        while stream.read(CHUNK):
            pass
        seen.append(stream.closed)

    make_cell(conn, "b").register_stream_cb("ch", "s", on_stream)
    sender = make_cell(conn, "a")
    future = sender.send_stream("ch", "s", "b", Message({}, BytesStream(payload(CHUNK))))
    assert future.result(timeout=20) == CHUNK
    assert seen == [False, False]
    assert streams[0].closed  # closed once the callback returned


def test_blobs_of_unknown_size_are_size_checked_before_the_final_ack(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    limit = SMALL.model_copy(update={"max_blob_size": 3 * CHUNK})
    got = Collector()
    make_cell(conn, "b", limit).register_blob_cb("ch", "t", got.blob_cb)
    sender = make_cell(conn, "a")
    fits = payload(2 * CHUNK + 7)
    future = sender.send_blob("ch", "t", "b", Message({}, IterStream([fits[:100], fits[100:]])))
    assert future.result(timeout=20) == len(fits)
    assert got.wait(future.get_stream_id()).data == fits
    too_big = IterStream(iter([payload(CHUNK)] * 4))  # size unknown until it is too late
    exc = sender.send_blob("ch", "t", "b", Message({}, too_big)).exception(timeout=20)
    assert isinstance(exc, BlobSizeError)
    assert "Receiver 'b'" in str(exc)


# -- forged control messages ------------------------------------------------------------------


def _forge(conn: RedisConnection, sid: int, control: Control, mac: bytes | None = None) -> None:
    fields = {CONTROL_FIELD: control.model_dump_json().encode()}
    if mac is not None:
        fields[MAC_FIELD] = mac
    conn.client.xadd(TransferIO(conn, sid, 60).ack, fields)


def _reader_paused(
    sink: bytearray, chunks: int, reading: threading.Event, resume: threading.Event
) -> Any:
    """A stream callback that reads ``chunks`` chunks, sets ``reading``, waits for ``resume``."""

    def on_stream(future: StreamFuture, stream: Any, resume_offset: int) -> None:
        for _ in range(chunks):
            sink.extend(stream.read(CHUNK))
        reading.set()
        assert resume.wait(20)
        while chunk := stream.read(CHUNK):
            sink.extend(chunk)

    return on_stream


@pytest.mark.parametrize("secure", [True, False], ids=["secure", "plain"])
def test_a_forged_done_ack_is_ignored_and_the_transfer_completes_intact(
    conn: RedisConnection,
    make_cell: CellFactory,
    caplog: pytest.LogCaptureFixture,
    secure: bool,
) -> None:
    data = payload(12 * CHUNK + 3)
    reading = threading.Event()
    forged = threading.Event()
    sink = bytearray()
    on_stream = _reader_paused(sink, 1, reading, forged)
    make_cell(conn, "b", key=KEY).register_stream_cb("ch", "s", on_stream)
    sender = make_cell(conn, "a", key=KEY)
    future = sender.send_stream("ch", "s", "b", Message({}, BytesStream(data)), secure=secure)
    sid = future.get_stream_id()
    assert reading.wait(20)
    caplog.set_level(logging.WARNING, logger="framework.cell")
    last = len(data) // CHUNK
    if secure:
        # Claims the whole stream was consumed: no MAC, then a MAC under another key.
        done = Control(kind="ack", role="rx", sender="b", seq=last, off=len(data), done=True)
        _forge(conn, sid, done)
        _forge(conn, sid, done, ControlAuth(b"x" * 32, sid).sign(done.model_dump_json().encode()))
        _forge(conn, sid, Control(kind="cancel", role="tx", sender="a"))  # to the receiver
    else:
        # Without a key only impossible claims can be told apart: the last chunk is not
        # even written yet (the window holds 4 chunks), so no receiver can be done.
        done = Control(kind="ack", role="rx", sender="b", seq=2, off=3 * CHUNK, done=True)
        _forge(conn, sid, done)
        # Notices in the name of a cell that is neither a target nor the sender.
        for role, kind in (("rx", "error"), ("rx", "close"), ("tx", "error"), ("tx", "cancel")):
            _forge(conn, sid, Control(kind=kind, role=role, sender="mallory", msg="forged"))
    strangers = 0 if secure else 4
    _wait_for(lambda: sum("Ignoring" in r.getMessage() for r in caplog.records) >= 1 + strangers)
    assert not future.done()  # the sender did not take the forged ack for success
    forged.set()
    assert future.result(timeout=30) == len(data)
    assert bytes(sink) == data


def test_an_unsigned_refusal_in_the_name_of_a_receiver_that_acknowledged_is_ignored(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An unsigned refusal ends a transfer only from a target that acknowledged nothing
    (a cell without the sender's key); once the target's acks were authenticated, it
    is a forgery."""
    data = payload(12 * CHUNK + 3)
    forged = threading.Event()
    sink = bytearray()
    # Past the first fetch (4 chunks): an ack goes out with the next.
    on_stream = _reader_paused(sink, 5, threading.Event(), forged)
    make_cell(conn, "b", key=KEY).register_stream_cb("ch", "s", on_stream)
    sender = make_cell(conn, "a", key=KEY)
    future = sender.send_stream("ch", "s", "b", Message({}, BytesStream(data)), secure=True)
    io = TransferIO(conn, future.get_stream_id(), 60)
    _wait_for(lambda: conn.client.hget(io.meta, "ack:b") is not None)
    caplog.set_level(logging.WARNING, logger="framework.cell")
    refusal = Control(kind="error", role="rx", sender="b", etype="StreamError", msg="forged")
    _forge(conn, io.sid, refusal)
    _wait_for(lambda: any("(error from rx 'b': forged)" in r.getMessage() for r in caplog.records))
    assert not future.done()
    forged.set()
    assert future.result(timeout=30) == len(data)
    assert bytes(sink) == data


def test_control_authentication_is_bound_to_the_stream() -> None:
    raw = Control(kind="ack", role="rx", sender="b", seq=1, off=9, done=True).model_dump_json()
    mac = ControlAuth(KEY, 1).sign(raw.encode())
    assert ControlAuth(KEY, 1).verify(raw.encode(), mac)
    assert not ControlAuth(KEY, 2).verify(raw.encode(), mac)  # replayed into another stream
    assert not ControlAuth(KEY, 1).verify(raw.replace("9", "8").encode(), mac)
    assert not ControlAuth(KEY, 1).verify(raw.encode(), None)
    signed = ControlAuth(KEY, 1).sign_text("3 99", "ack:b")
    assert ControlAuth(KEY, 1).open_text(signed, "ack:b") == "3 99"
    assert ControlAuth(KEY, 1).open_text(signed, "ack:c") is None  # another receiver's field
    assert ControlAuth(KEY, 2).open_text(signed, "ack:b") is None  # another stream
    assert ControlAuth(KEY, 1).open_text(signed.replace("3 99", "4 99"), "ack:b") is None
    assert ControlAuth(KEY, 1).open_text("3 99 zz", "ack:b") is None


# -- require_secure -----------------------------------------------------------------------------


def test_require_secure_refuses_plaintext(conn: RedisConnection, make_cell: CellFactory) -> None:
    strict = SMALL.model_copy(update={"require_secure": True})
    got = Collector()
    make_cell(conn, "b", strict, key=KEY).register_blob_cb("ch", "t", got.blob_cb)
    sender = make_cell(conn, "a", key=KEY)
    exc = sender.send_blob("ch", "t", "b", Message({}, payload(CHUNK))).exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert isinstance(exc.__cause__, EncryptionError)
    assert "accepts only encrypted transfers" in str(exc)
    assert got.items == {}
    future = sender.send_blob("ch", "t", "b", Message({}, payload(CHUNK)), secure=True)
    assert future.result(timeout=20) == CHUNK
    strict_sender = make_cell(conn, "c", strict, key=KEY)
    with pytest.raises(EncryptionError, match="pass secure=True"):
        strict_sender.send_blob("ch", "t", "b", Message({}, b"plain"))
    with pytest.raises(ConfigurationError, match="no key"):
        StreamCell(conn, "d", config=CellConfig(require_secure=True))


# -- malformed frames -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ({HEADER_FIELD: None}, "has no header field 'h'"),
        ({DATA_FIELD: None}, "has no data field 'd'"),
        ({HEADER_FIELD: b"{not json"}, "is malformed"),
    ],
    ids=["no-header", "no-data", "bad-json"],
)
def test_a_malformed_chunk_entry_fails_both_sides_naming_the_stream(
    conn: RedisConnection, make_cell: CellFactory, damage: dict[bytes, Any], expected: str
) -> None:
    config = SMALL.model_copy(update={"window": 64 * CHUNK})
    future = make_cell(conn, "a", config).send_blob("ch", "t", "b", Message({}, payload(4 * CHUNK)))
    sid = future.get_stream_id()
    io = TransferIO(conn, sid, 60)
    _wait_for(lambda: conn.client.xlen(io.data) >= 4)
    entries = conn.client.xrange(io.data)
    conn.client.delete(io.data)
    for eid, fields in entries:  # rewrite the stream with chunk 2 damaged
        if eid == b"3-0":
            fields = {k: v for k, v in {**fields, **damage}.items() if v is not None}
        conn.client.xadd(io.data, fields, id=eid)
    calls: list[str] = []

    def on_blob(f: StreamFuture) -> None:
        calls.append("blob_cb")

    def preflight(f: StreamFuture) -> bool:
        calls.append("preflight_cb")
        return True

    make_cell(conn, "b").register_blob_cb("ch", "t", on_blob, preflight_cb=preflight)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert isinstance(exc.__cause__, MalformedFrameError)
    assert expected in str(exc)
    assert f"stream {sid}" in str(exc)
    assert calls == ["preflight_cb"]  # it accepted; the failed blob never reached blob_cb


# -- NVFlare call forms ----------------------------------------------------------------------


def test_nvflare_call_forms(conn: RedisConnection, make_cell: CellFactory) -> None:
    got = Collector()
    receiver = make_cell(conn, "b")
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    receiver.register_blob_cb("ch", "ok", got.blob_cb, preflight_cb=lambda f: True)
    seen: list[Any] = []

    def veto(future: StreamFuture) -> bool:
        seen.append((future.get_headers(), future.get_size()))
        return False

    def explode(future: StreamFuture) -> bool:
        raise PermissionError("not from this site")

    receiver.register_blob_cb("ch", "veto", got.blob_cb, preflight_cb=veto)
    receiver.register_blob_cb("ch", "boom", got.blob_cb, preflight_cb=explode)
    sender = make_cell(conn, "a")
    data = payload(2 * CHUNK + 1)
    stream = Message({}, BytesStream(data))
    assert sender.send_stream("ch", "s", "b", stream, reliable=True).result(timeout=20) == len(data)
    ok = sender.send_blob("ch", "ok", "b", Message({}, data), reliable=False)
    assert ok.result(timeout=20) == len(data)
    assert got.wait(ok.get_stream_id()).data == data
    exc = sender.send_blob("ch", "veto", "b", Message({"k": 1}, data)).exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "preflight check of cell 'b' rejected blob" in str(exc)
    assert seen == [({"k": 1, **_ROUTE, "cn__topic": "veto"}, len(data))]
    exc = sender.send_blob("ch", "boom", "b", Message({}, data)).exception(timeout=20)
    assert "PermissionError: not from this site" in str(exc)


_ROUTE = {"cn__origin": "a", "cn__channel": "ch"}


def test_nvflare_wildcard_topics_find_a_callback(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    receiver, sender = make_cell(conn, "b"), make_cell(conn, "a")
    exact, channel, anything = Collector(), Collector(), Collector()
    receiver.register_blob_cb("ch", "t", exact.blob_cb)
    receiver.register_blob_cb("ch", "*", channel.blob_cb)
    receiver.register_blob_cb("*", "*", anything.blob_cb)
    sent = {
        (c, t): sender.send_blob(c, t, "b", Message({}, b"%s/%s" % (c.encode(), t.encode())))
        for c, t in (("ch", "t"), ("ch", "other"), ("x", "y"))
    }
    for future in sent.values():
        assert future.result(timeout=20) > 0
    assert exact.wait(sent[("ch", "t")].get_stream_id()).data == b"ch/t"
    assert channel.wait(sent[("ch", "other")].get_stream_id()).data == b"ch/other"
    item = anything.wait(sent[("x", "y")].get_stream_id())
    assert item.data == b"x/y"
    assert item.future is not None
    assert item.future.headers[MessageHeaderKey.ORIGIN] == "a"  # how NVFlare code reads it
    assert item.future.headers[MessageHeaderKey.TOPIC] == "y"
    assert len(exact.items) == len(channel.items) == len(anything.items) == 1


def test_a_transfer_nobody_registered_for_fails_the_sender_saying_so(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    make_cell(conn, "b").register_blob_cb("ch", "t", Collector().blob_cb)
    started = time.monotonic()
    future = make_cell(conn, "a").send_blob("ch", "nope", "b", Message({}, b"x"))
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "Cell 'b' has no callback registered for ch/nope" in str(exc)
    # NVFlare fails at once; here after the grace for callbacks still being registered,
    # not after the sender's idle timeout (20 s in these tests).
    assert time.monotonic() - started < SMALL.idle_timeout / 2


def test_nvflare_payload_and_future_forms(conn: RedisConnection, make_cell: CellFactory) -> None:
    got = Collector()
    receiver, sender = make_cell(conn, "b"), make_cell(conn, "a")
    receiver.register_blob_cb("ch", "t", got.blob_cb)
    receiver.register_stream_cb("ch", "s", got.stream_cb)
    # A message without a payload is an empty blob.
    assert sender.send_blob("ch", "t", "b", Message({"k": 1})).result(timeout=20) == 0

    class EndsWithNone(Stream):
        def __init__(self) -> None:
            super().__init__(0)
            self.parts = [b"abc"]

        def read(self, chunk_size: int) -> bytes | None:  # type: ignore[override]
            return self.parts.pop() if self.parts else None  # NVFlare: None ends it

    ended = sender.send_stream("ch", "s", "b", Message({}, EndsWithNone()))
    assert ended.result(timeout=20) == 3
    assert got.wait(ended.get_stream_id()).data == b"abc"
    # Properties stay with the message object; they are not headers.
    message = Message({"k": 1}, b"x")
    message.set_prop("local", object())
    assert message.get_prop("local") is not None
    assert message.get_prop("missing", 7) == 7
    assert sender.send_blob("ch", "t", "b", message).result(timeout=20) == 1


def test_a_future_whose_transfer_the_other_side_cancelled_says_cancelled(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    def closes(future: StreamFuture, stream: Any, resume: int) -> None:
        stream.read(10)
        stream.close()

    make_cell(conn, "b").register_stream_cb("ch", "s", closes)
    future = make_cell(conn, "a").send_stream(
        "ch", "s", "b", Message({}, BytesStream(payload(8 * CHUNK)))
    )
    assert isinstance(future.exception(timeout=20), StreamCancelled)
    assert future.cancelled()  # NVFlare's: set for any StreamCancelled, not only cancel()


def test_unusable_callbacks_fail_at_registration(fake_conn: RedisConnection) -> None:
    with StreamCell(fake_conn, "b", config=SMALL) as cell:
        with pytest.raises(ConfigurationError, match="stream_cb"):
            cell.register_stream_cb("ch", "s", lambda future, stream: None)
        with pytest.raises(ConfigurationError, match=r"blob_cb.*keywords \['extra'\]"):
            cell.register_blob_cb("ch", "t", lambda future: None, extra=1)
        with pytest.raises(ConfigurationError, match="preflight_cb"):
            cell.register_blob_cb("ch", "t", lambda f: None, preflight_cb=lambda: True)
        with pytest.raises(ConfigurationError, match="callable"):
            cell.register_blob_cb("ch", "t", "not a function")
        with pytest.raises(TypeError, match="unexpected keyword"):
            cell.send_blob("ch", "t", "x", Message({}, b"1"), timeout=5)  # type: ignore[call-arg]


# -- TTLs ---------------------------------------------------------------------------------------


def test_a_late_refresh_never_extends_an_ended_transfer(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    future = make_cell(conn, "a").send_blob("ch", "t", "absent", Message({}, payload(9 * CHUNK)))
    future.cancel()
    io = TransferIO(conn, future.get_stream_id(), 600)
    _wait_for(lambda: 0 < conn.client.ttl(io.meta) <= 60)
    # A receiver that had not heard of the end yet acks, and a sender refreshes.
    io.post(Control(kind="ack", role="rx", sender="late", seq=0, off=CHUNK))
    io.write([], None, "0-0")
    for key in (io.meta, io.ack):
        assert 0 < conn.client.ttl(key) <= 60


# -- forged entries read straight from Redis ---------------------------------------------------


def _header(seq: int, off: int, body: bytes, last: bool = False) -> bytes:
    crc = crc32c(body)
    header = ChunkHeader(seq=seq, off=off, len=len(body), wlen=len(body), crc=crc, last=last)
    return header.model_dump_json().encode()


def _receiver(conn: RedisConnection, sid: int, mode: Any = "blob") -> RxTransfer:
    ann = Announce(
        sid=sid, origin="a", channel="c", topic="t", mode=mode, size=0, targets=["b"],
        chunk_size=CHUNK, window=4 * CHUNK,
    )  # fmt: skip
    io = TransferIO(conn, sid, 60)
    io.create(ann)
    config = SMALL.model_copy(update={"idle_timeout": 3})
    return RxTransfer(io, ann, "b", config, None, Position(), threading.Event())


@pytest.mark.parametrize("second_header", ["after-the-body", "before-the-body"])
def test_a_blob_holds_only_the_bytes_that_were_verified(
    conn: RedisConnection, second_header: str
) -> None:
    # A body read straight into the blob was placed by the entry's first header; the
    # entry's last header is the one it is checked against. Entry 2-0 is placed at byte
    # 100 but dropped as a duplicate of chunk 0; entry 3-0's body is placed at byte 150
    # but accepted as chunk 1 at byte 100, where entry 2-0's unverified bytes lie.
    rx = _receiver(conn, 9)
    first, dropped, accepted = b"A" * 100, b"X" * 50, b"Y" * 50

    def add(eid: str, placed_by: bytes, body: bytes, checked_by: bytes) -> None:
        if second_header == "after-the-body":
            fields = [HEADER_FIELD, placed_by, DATA_FIELD, body, HEADER_FIELD, checked_by]
        else:
            fields = [HEADER_FIELD, placed_by, HEADER_FIELD, checked_by, DATA_FIELD, body]
        conn.client.execute_command("XADD", rx.io.data, eid, *fields)

    header = _header(0, 0, first)
    conn.client.execute_command("XADD", rx.io.data, "1-0", HEADER_FIELD, header, DATA_FIELD, first)
    add("2-0", _header(1, 100, dropped), dropped, _header(0, 0, first))
    add("3-0", _header(2, 150, accepted), accepted, _header(1, 100, accepted, last=True))
    try:
        blob = receive_blob(rx, StreamFuture(9), 1 << 20)
    finally:
        rx.close()
    assert bytes(blob) == first + accepted


@pytest.mark.parametrize("where", ["ack-stream", "inbox"])
def test_a_deeply_nested_envelope_is_skipped_like_any_unreadable_one(
    conn: RedisConnection, where: str
) -> None:
    nested = b"[" * 100_000  # valid JSON up to where it is cut; deeper than any parser goes
    if where == "ack-stream":
        rx = _receiver(conn, 11, mode="stream")
        try:
            conn.client.xadd(rx.io.ack, {CONTROL_FIELD: nested})
            body = b"chunk"
            header = _header(0, 0, body, last=True)
            conn.client.xadd(rx.io.data, {HEADER_FIELD: header, DATA_FIELD: body}, id="1-0")
            assert [bytes(data) for _, data in rx.fetch()] == [body]
            assert rx.io.ignored is not None
            assert "is malformed" in rx.io.ignored
        finally:
            rx.close()
        return
    inbox = Inbox(conn, "b", 60)
    inbox.ensure()
    ann = Announce(
        sid=12, origin="a", channel="c", topic="t", mode="blob", size=1, targets=["b"],
        chunk_size=CHUNK, window=CHUNK,
    )  # fmt: skip
    conn.client.xadd(inbox.key, {ANNOUNCE_FIELD: nested})
    announce(conn, "b", ann, 60)
    # The announcement behind the forged one is delivered, not lost with its batch.
    assert [a for _, a in inbox.receive()] == [None, ann]


def test_a_stream_key_of_another_type_fails_the_read_naming_it(
    real_conn: RedisConnection,
) -> None:
    # Real Redis only: fakeredis fails inside its own XREAD on a key of another type.
    rx = _receiver(real_conn, 13, mode="stream")
    try:
        real_conn.client.set(rx.io.ack, b"not a stream")
        with pytest.raises(BackendError, match=r"read chunks of 'fw:xfer:\{13\}:data'.*WRONGTYPE"):
            rx.fetch()
    finally:
        rx.close()


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secure"])
def test_a_stored_position_that_is_not_text_is_refused(conn: RedisConnection, secure: bool) -> None:
    auth = ControlAuth(KEY, 14) if secure else None
    io = TransferIO(conn, 14, 60, auth)
    conn.client.hset(io.meta, "ack:b", b"\xff\xfe 1")
    if secure:
        with pytest.raises(BadPositionError, match="position of 'b' in stream 14 is not auth"):
            io.acked("b")  # the receiver starts over, if Redis still holds chunk 0
    else:
        with pytest.raises(MalformedFrameError, match="position of 'b' in stream 14"):
            io.acked("b")


def test_a_transfer_whose_stored_position_is_malformed_is_refused_once(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Announced before the receiver has a callback, so the forged position is in place
    # when the receiver starts it: the sender learns why, and the receiver does not retry.
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, payload(CHUNK)))
    time.sleep(0.2)
    io = TransferIO(conn, future.get_stream_id(), 60)
    conn.client.hset(io.meta, "ack:b", b"\xff\xfe 1")
    receiver = make_cell(conn, "b")
    receiver.register_blob_cb("ch", "t", Collector().blob_cb)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert "position of 'b' in stream" in str(exc)
    assert "malformed" in str(exc)
    time.sleep(1.5)  # a few inbox rounds: a retried start would log again
    refusals = [r for r in caplog.records if "refuses stream" in r.getMessage()]
    assert len(refusals) == 1
    assert not [r for r in caplog.records if "Could not start" in r.getMessage()]


def test_a_heartbeat_written_again_does_not_keep_a_receiver_waiting(conn: RedisConnection) -> None:
    # A secure sender's heartbeat is authentic, and so is every copy of it: a receiver
    # acts on each heartbeat once, so copies of an old one do not hide a dead sender.
    ann = Announce(
        sid=15, origin="a", channel="c", topic="t", mode="stream", size=0, targets=["b"],
        chunk_size=CHUNK, window=4 * CHUNK,
    )  # fmt: skip
    io = TransferIO(conn, 15, 60, ControlAuth(KEY, 15))
    io.create(ann)
    config = SMALL.model_copy(update={"idle_timeout": 1.5, "heartbeat": 0.5})
    rx = RxTransfer(io, ann, "b", config, None, Position(), threading.Event())
    io.post(Control(kind="beat", role="tx", sender="a", seq=1))
    ((_, fields),) = conn.client.xrange(io.ack)
    replaying = threading.Event()

    def replay() -> None:
        deadline = time.monotonic() + 8  # bounded, so the old behaviour ends too
        while time.monotonic() < deadline and not replaying.wait(0.1):
            conn.client.xadd(io.ack, fields)

    thread = threading.Thread(target=replay)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(StreamTimeout, match="neither a chunk nor a heartbeat"):
            rx.fetch()
        assert time.monotonic() - started < 5
        assert rx.io.ignored is not None
        assert "Heartbeat 1 of stream 15" in rx.io.ignored
    finally:
        replaying.set()
        thread.join()
        rx.close()


def _paused_after_one_chunk(
    conn: RedisConnection, make_cell: CellFactory
) -> tuple[StreamFuture, TransferIO, threading.Event]:
    """A transfer whose source waits after its first chunk (in Redis) until released."""
    release = threading.Event()

    def source() -> Any:
        yield payload(CHUNK)
        release.wait(10)
        yield payload(CHUNK, seed=2)

    make_cell(conn, "b").register_stream_cb("ch", "s", Collector().stream_cb)
    future = make_cell(conn, "a").send_stream("ch", "s", "b", Message({}, IterStream(source())))
    io = TransferIO(conn, future.get_stream_id(), 60)
    _wait_for(lambda: conn.client.xlen(io.data), timeout=10)
    return future, io, release


def test_an_entry_written_past_the_chunks_fails_the_transfer_naming_it(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # A copy of chunk 0 under a high id: receivers drop it as a duplicate, and every
    # later chunk id is refused as "equal or smaller", which alone looks like a retried
    # write that had succeeded. The sender must not take it for one.
    future, io, release = _paused_after_one_chunk(conn, make_cell)
    ((_, fields),) = conn.client.xrange(io.data, count=1)
    conn.client.xadd(io.data, fields, id="999999999-0")
    release.set()
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert isinstance(exc.__cause__, MalformedFrameError)
    assert "999999999-0" in str(exc)
    assert "chunk 1 of stream" in str(exc)


def test_a_chunk_written_again_after_a_lost_reply_counts_as_written(conn: RedisConnection) -> None:
    io = TransferIO(conn, 16, 60)
    frame = (0, _header(0, 0, b"chunk"), b"chunk")
    io.write([frame], None, "0-0")
    io.write([frame], None, "0-0")  # as a retry meets its own entry: no error, no copy
    assert conn.client.xlen(io.data) == 1


def test_another_entry_at_a_chunks_id_fails_the_sender(conn: RedisConnection) -> None:
    # Written ahead of the sender at the id of its next chunk, with a valid header and
    # checksum: receivers would read it as the chunk. Only a byte-for-byte copy of what
    # this sender wrote is its own earlier write.
    io = TransferIO(conn, 17, 60)
    forged = b"X" * 5
    conn.client.xadd(io.data, {HEADER_FIELD: _header(0, 0, forged), DATA_FIELD: forged}, id="1-0")
    with pytest.raises(MalformedFrameError, match="already holds another entry at its id"):
        io.write([(0, _header(0, 0, b"chunk"), b"chunk")], None, "0-0")


@pytest.mark.integration
def test_a_forged_next_chunk_fails_the_transfer_instead_of_replacing_it(
    real_conn: RedisConnection, make_cell: CellFactory
) -> None:
    future, io, release = _paused_after_one_chunk(real_conn, make_cell)
    forged = b"X" * CHUNK
    header = _header(1, CHUNK, forged)
    real_conn.client.xadd(io.data, {HEADER_FIELD: header, DATA_FIELD: forged}, id="2-0")
    release.set()
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert isinstance(exc.__cause__, MalformedFrameError)
    assert "Chunk 1 of stream" in str(exc)

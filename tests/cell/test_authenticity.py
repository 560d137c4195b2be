"""Announcements and stored positions rewritten in Redis by someone without the key."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest
from crc32c import crc32c

from framework.cell import BytesStream, Message, StreamError, StreamFuture
from framework.cell.auth import BadAnnouncementError, BadPositionError, ControlAuth
from framework.cell.frames import ANNOUNCE_FIELD, MAC_FIELD, Announce, ChunkHeader, Control
from framework.cell.transport import TransferIO
from framework.cell.window import Position
from framework.connection import RedisConnection
from framework.exceptions import SequenceError
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, payload

CHUNK = SMALL.chunk_size
KEY = b"0123456789abcdef0123456789abcdef"
STRICT = SMALL.model_copy(update={"require_secure": True})


def _wait_for(predicate: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def _only_entry(conn: RedisConnection, cell: str) -> tuple[bytes, dict[bytes, bytes]]:
    key = conn.keys.inbox(cell)
    _wait_for(lambda: conn.client.xlen(key) == 1)
    ((eid, fields),) = conn.client.xrange(key)
    return eid, fields


def _header(seq: int, off: int, body: bytes, last: bool = False) -> bytes:
    crc = crc32c(body)
    header = ChunkHeader(seq=seq, off=off, len=len(body), wlen=len(body), crc=crc, last=last)
    return header.model_dump_json().encode()


# -- announcements -----------------------------------------------------------------------------


@pytest.mark.parametrize("mac", ["dropped", "copied"])
def test_a_rewritten_announcement_never_reaches_a_callback(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture, mac: str
) -> None:
    # Rewritten while the receiver is away: another origin, route and headers, the
    # genuine (encrypted) chunks. It must not be handed to the other route's callback.
    caplog.set_level(logging.WARNING)
    sender = make_cell(conn, "a", STRICT, key=KEY)
    data = payload(2 * CHUNK + 3)
    future = sender.send_blob(
        "model", "weights", "b", Message({"approved": False}, data), secure=True
    )
    eid, fields = _only_entry(conn, "b")
    forged = json.loads(fields[ANNOUNCE_FIELD])
    forged.update(origin="admin", channel="ctl", topic="exec", headers={"approved": True})
    entry = {ANNOUNCE_FIELD: json.dumps(forged)}
    if mac == "copied":
        entry[MAC_FIELD] = fields[MAC_FIELD]
    inbox = conn.keys.inbox("b")
    conn.client.xdel(inbox, eid)
    conn.client.xadd(inbox, entry)

    admin, model = Collector(), Collector()
    receiver = make_cell(conn, "b", STRICT, key=KEY)
    receiver.register_blob_cb("ctl", "exec", admin.blob_cb)
    receiver.register_blob_cb("model", "weights", model.blob_cb)
    _wait_for(lambda: _logged(caplog, "Ignoring an announcement"))
    why = "carries no MAC" if mac == "dropped" else "not authenticated with the cell key"
    assert _logged(caplog, why)
    _wait_for(lambda: conn.client.xlen(inbox) == 0)  # dropped, not retried
    assert admin.items == {}
    assert model.items == {}
    # No success either: the sender hears, unsigned, that its announcement failed there.
    error = future.exception(timeout=20)
    assert "'b' refused the transfer" in str(error)
    assert "could not authenticate the announcement with its key" in str(error)

    # Genuine traffic still flows.
    again = sender.send_blob("model", "weights", "b", Message({}, data), secure=True)
    assert again.result(timeout=20) == len(data)
    assert bytes(model.wait(again.get_stream_id()).data) == data


def test_an_announcement_copied_into_another_inbox_is_ignored(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, payload(CHUNK)))
    _, fields = _only_entry(conn, "b")
    conn.client.xadd(conn.keys.inbox("c"), fields)
    got = Collector()
    make_cell(conn, "c").register_blob_cb("ch", "t", got.blob_cb)
    _wait_for(lambda: _logged(caplog, "is for ['b'], not for cell 'c'"))
    time.sleep(0.3)
    assert got.items == {}
    future.cancel()


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ({ANNOUNCE_FIELD: b"not json"}, "is malformed: 1 invalid field(s) (not a JSON object)"),
        ({ANNOUNCE_FIELD: b'{"v": 1}'}, "Dropping unreadable announcement"),
        ({b"foo": b"bar"}, "holds no announcement (fields [b'foo'])"),
    ],
    ids=["not-json", "missing-fields", "foreign-entry"],
)
def test_garbage_in_an_inbox_is_dropped_in_one_log_line(
    conn: RedisConnection,
    make_cell: CellFactory,
    caplog: pytest.LogCaptureFixture,
    entry: dict[bytes, bytes],
    said: str,
) -> None:
    """Before, a foreign entry went without a word, and an unreadable one with the
    traceback of the JSON parser (40 lines per entry)."""
    caplog.set_level(logging.WARNING)
    got = Collector()
    make_cell(conn, "b").register_blob_cb("ch", "t", got.blob_cb)
    conn.client.xadd(conn.keys.inbox("b"), entry)  # type: ignore[arg-type]
    _wait_for(lambda: _logged(caplog, said))
    (record,) = [r for r in caplog.records if "announcement" in r.getMessage()]
    assert record.exc_info is None
    data = payload(CHUNK + 1)
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, data))
    assert future.result(timeout=20) == len(data)  # the cell reads on


def test_an_announcement_that_differs_from_the_stored_one_is_ignored(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # The inbox's copy is authentic; the transfer's own copy was rewritten.
    caplog.set_level(logging.WARNING)
    future = make_cell(conn, "a", key=KEY).send_blob(
        "ch", "t", "b", Message({"round": 1}, payload(CHUNK)), secure=True
    )
    io = TransferIO(conn, future.get_stream_id(), 60)
    stored = json.loads(conn.client.hget(io.meta, "announce"))
    conn.client.hset(io.meta, "announce", json.dumps({**stored, "headers": {"round": 9}}))
    got = Collector()
    make_cell(conn, "b", key=KEY).register_blob_cb("ch", "t", got.blob_cb)
    _wait_for(lambda: _logged(caplog, "differs from the one stored with the transfer"))
    time.sleep(0.3)
    assert got.items == {}
    future.cancel()


def _stored_secure_transfer(conn: RedisConnection, sid: int) -> TransferIO:
    """A secure transfer as a sender that died left it: announcement signed, no frames."""
    ann = Announce(
        sid=sid, origin="a", channel="c", topic="t", mode="stream", size=4 * CHUNK,
        targets=["b"], chunk_size=CHUNK, window=4 * CHUNK, secure=True,
    )  # fmt: skip
    io = TransferIO(conn, sid, 60)
    io.create(ann, ControlAuth(KEY, sid).sign_announce(ann.model_dump_json().encode()))
    return io


def test_resume_send_refuses_a_downgraded_announcement(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # Rewritten to plaintext, the MAC dropped: resuming would send the rest unencrypted.
    io = _stored_secure_transfer(conn, 21)
    stored = json.loads(conn.client.hget(io.meta, "announce"))
    conn.client.hset(io.meta, "announce", json.dumps({**stored, "secure": False}))
    conn.client.hdel(io.meta, "announce_mac")
    sender = make_cell(conn, "a", key=KEY)
    with pytest.raises(BadAnnouncementError, match=r"stream 21 is not authenticated.*no MAC"):
        sender.resume_send(21, Message({}, payload(4 * CHUNK)))
    assert conn.client.xlen(io.data) == 0  # nothing was sent

    # The untouched announcement resumes.
    _stored_secure_transfer(conn, 22)
    future = sender.resume_send(22, Message({}, payload(4 * CHUNK)))
    _wait_for(lambda: conn.client.xlen(TransferIO(conn, 22, 60).data) > 0)
    future.cancel()


# -- acknowledged positions --------------------------------------------------------------------


def test_a_position_copied_from_another_receiver_or_stream_is_refused(
    conn: RedisConnection,
) -> None:
    io = TransferIO(conn, 31, 60, ControlAuth(KEY, 31))
    io.post(Control(kind="ack", role="rx", sender="b1", seq=3, off=4 * CHUNK))
    io.post(Control(kind="ack", role="rx", sender="b2", seq=1, off=2 * CHUNK))
    assert io.acked("b1") == Position(3, 4 * CHUNK)
    conn.client.hset(io.meta, "ack:b2", conn.client.hget(io.meta, "ack:b1"))
    with pytest.raises(BadPositionError, match="position of 'b2' in stream 31 is not auth"):
        io.acked("b2")
    other = TransferIO(conn, 32, 60, ControlAuth(KEY, 32))
    conn.client.hset(other.meta, "ack:b1", conn.client.hget(io.meta, "ack:b1"))
    with pytest.raises(BadPositionError, match="stream 32"):
        other.acked("b1")


def test_a_receiver_restarted_with_another_receivers_position_misses_no_bytes(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Fan-out: b2 restarts while b1 is ahead; b1's signed position is copied into b2's
    # field. b2 must not continue at b1's offset (bytes it never received) while the
    # sender counts them delivered: it starts over, or the transfer fails saying why.
    data = payload(24 * CHUNK)
    got1 = Collector()
    make_cell(conn, "b1", key=KEY).register_stream_cb("ch", "s", got1.stream_cb, CHUNK)
    paused, go = threading.Event(), threading.Event()
    seen = bytearray()

    def first_b2(future: StreamFuture, stream: Any, resume: int) -> None:
        while chunk := stream.read(CHUNK):
            seen.extend(chunk)
            if len(seen) >= 3 * CHUNK and not go.is_set():
                paused.set()
                go.wait(10)

    # One chunk per read: its acks go out with its reads, before it pauses.
    b2 = make_cell(conn, "b2", SMALL.model_copy(update={"read_count": 1}), key=KEY)
    b2.register_stream_cb("ch", "s", first_b2)
    sender = make_cell(conn, "a", key=KEY)
    future = sender.send_stream("ch", "s", ["b1", "b2"], Message({}, BytesStream(data)), True)
    io = TransferIO(conn, future.get_stream_id(), 60, ControlAuth(KEY, future.get_stream_id()))
    assert paused.wait(20)
    _wait_for(lambda: io.acked("b1").off > io.acked("b2").off > 0)
    closer = threading.Thread(target=b2.close)
    closer.start()
    time.sleep(0.2)
    go.set()
    closer.join(20)
    ahead = conn.client.hget(io.meta, "ack:b1")
    conn.client.hset(io.meta, "ack:b2", ahead)
    copied = int(ahead.split()[1])

    got2 = Collector()
    make_cell(conn, "b2", key=KEY).register_stream_cb("ch", "s", got2.stream_cb)
    exc = future.exception(timeout=30)
    assert _logged(caplog, "position of 'b2'")
    if exc is None:  # started over: chunk 0 was still in Redis
        item = got2.wait(future.get_stream_id())
        assert item.resume == 0 != copied
        assert bytes(item.data) == data
        assert bytes(got1.wait(future.get_stream_id()).data) == data
    else:  # Redis no longer held chunk 0: the transfer fails, naming why
        assert isinstance(exc, StreamError)
        assert "position is not authentic" in str(exc)
        assert "no longer holds its chunk 0" in str(exc)


def test_a_receiver_resuming_past_the_last_chunk_fails_instead_of_waiting(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    # Without a key positions are not authenticated: b1's final position copied into
    # b2's field made b2 wait for a chunk after the last, both sides beating for ever.
    data = payload(3 * CHUNK)  # within the window: b1 gets it all while b2 waits
    got1 = Collector()
    make_cell(conn, "b1").register_stream_cb("ch", "s", got1.stream_cb)
    paused, go = threading.Event(), threading.Event()

    def first_b2(future: StreamFuture, stream: Any, resume: int) -> None:
        stream.read(CHUNK)
        paused.set()
        go.wait(10)
        while stream.read(CHUNK):  # until the closing cell stops it
            pass

    b2 = make_cell(conn, "b2", SMALL.model_copy(update={"read_count": 1}))
    b2.register_stream_cb("ch", "s", first_b2)
    future = make_cell(conn, "a").send_stream(
        "ch", "s", ["b1", "b2"], Message({}, BytesStream(data))
    )
    io = TransferIO(conn, future.get_stream_id(), 60)
    assert paused.wait(20)
    got1.wait(future.get_stream_id())
    _wait_for(lambda: io.acked("b1").off == len(data))
    closer = threading.Thread(target=b2.close)
    closer.start()
    time.sleep(0.2)
    go.set()
    closer.join(20)
    conn.client.hset(io.meta, "ack:b2", conn.client.hget(io.meta, "ack:b1"))
    make_cell(conn, "b2").register_stream_cb("ch", "s", Collector().stream_cb)
    exc = future.exception(timeout=20)
    assert isinstance(exc, StreamError)
    assert f"cannot resume at byte {len(data)}" in str(exc)
    assert "last chunk is 2, so chunk 3 never comes" in str(exc)


def test_resuming_needs_the_next_chunk_in_redis(conn: RedisConnection) -> None:
    io = TransferIO(conn, 41, 60)
    io.check_resumable(Position(5, 6 * CHUNK))  # nothing written yet: it may still come
    body = b"x" * 10
    frames = [(seq, _header(seq, seq * 10, body, last=seq == 4), body) for seq in (2, 3, 4)]
    io.write(frames, None, "0-0")
    io.check_resumable(Position(1, 20))  # chunk 2 is there
    with pytest.raises(SequenceError, match=r"holds its chunk 1 .*first chunk there is 2"):
        io.check_resumable(Position(0, 10))
    with pytest.raises(SequenceError, match="last chunk is 4, so chunk 5 never comes"):
        io.check_resumable(Position(4, 50))


def test_a_finished_transfer_announced_again_is_ignored(
    real_conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone who can write to Redis copies a signed transfer (its keys and its inbox
    entry) and writes it again once it is done: the live receiver ran its callback a
    second time with the old payload."""
    caplog.set_level(logging.WARNING)
    client = real_conn.client
    future = make_cell(real_conn, "a", key=KEY).send_blob(
        "ch", "t", "b", Message({"round": 1}, b"round 1" * 100), secure=True
    )
    sid = future.get_stream_id()
    _only_entry(real_conn, "b")
    _wait_for(lambda: client.xlen(TransferIO(real_conn, sid, 60).data) == 1)  # the one chunk
    copied = {key: client.dump(key) for key in client.keys(f"fw:xfer:{{{sid}}}:*")}
    inbox = client.xrange(real_conn.keys.inbox("b"))
    got: list[bytes] = []
    make_cell(real_conn, "b", key=KEY).register_blob_cb(
        "ch", "t", lambda f: got.append(bytes(f.result()))
    )
    assert future.result(timeout=20) == 700
    assert got == [b"round 1" * 100]
    _wait_for(lambda: not client.exists(*copied))  # the sender deleted the transfer
    for key, value in copied.items():
        client.restore(key, 0, value)
    for _, fields in inbox:
        client.xadd(real_conn.keys.inbox("b"), fields)
    _wait_for(lambda: _logged(caplog, f"stream {sid} from 'a': cell 'b' received that"))
    time.sleep(0.5)  # a second delivery would have run its callback by now
    assert got == [b"round 1" * 100]

"""The raw XREAD reader: chunk bodies arrive with the CRC-32C of exactly their bytes."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from typing import Any

import pytest
from crc32c import crc32c
from redis.exceptions import ConnectionError as RedisConnectionError

from framework.cell import respreader
from framework.cell.rawread import ReadSession, round_trip
from framework.cell.respreader import Checked, RespReader
from framework.connection import RedisConnection

#: Around the in-place threshold (16 KiB) and up to a chunk that needs many reads.
SIZES = [0, 5, (1 << 14) - 1, 1 << 14, 70_000, (1 << 20) - 1024]


def _read(conn: RedisConnection, place: Any = None) -> list[tuple[bytes, list[Any]]]:
    replies = round_trip(conn.blocking, [("XREAD", "COUNT", 100, "STREAMS", "s", "0-0")], place)
    assert replies is not None
    [(key, entries)] = replies[-1]
    assert key == b"s"
    return entries


def test_chunk_bodies_come_with_their_crc(real_conn: RedisConnection) -> None:
    payloads = [os.urandom(size) for size in SIZES]
    for payload in payloads:
        # A value that reads "d" is not a field name: only the field's value is checked.
        real_conn.client.xadd("s", {b"h": b"d", b"d": payload, b"x": payload[:3]})
    entries = _read(real_conn)
    assert len(entries) == len(payloads)
    for (_, fields), payload in zip(entries, payloads, strict=True):
        assert fields[:2] == [b"h", b"d"]
        body = fields[3]
        assert isinstance(body, Checked)
        assert bytes(body.data) == payload
        assert body.crc == crc32c(payload)
        assert fields[4:] == [b"x", payload[:3]]  # other fields stay plain


def test_bodies_read_in_place_are_checked_too(real_conn: RedisConnection) -> None:
    payloads = [os.urandom(size) for size in SIZES]
    for payload in payloads:
        real_conn.client.xadd("s", {b"d": payload})
    places: list[bytearray] = []

    def place(fields: list[Any], size: int) -> memoryview:
        places.append(bytearray(size))
        return memoryview(places[-1])

    entries = _read(real_conn, place)
    for (_, fields), payload, buffer in zip(entries, payloads, places, strict=True):
        body = fields[1]
        assert isinstance(body, Checked)
        assert body.data.obj is buffer  # received straight into the chosen place
        assert bytes(buffer) == payload
        assert body.crc == crc32c(payload)


def test_a_flipped_byte_changes_the_checksum(real_conn: RedisConnection) -> None:
    payload = bytearray(os.urandom((1 << 20) - 1024))
    real_conn.client.xadd("s", {b"d": bytes(payload)})
    payload[500_000] ^= 0x40
    real_conn.client.xadd("s", {b"d": bytes(payload)})
    first, second = (fields[1] for _, fields in _read(real_conn))
    assert first.crc != second.crc
    assert second.crc == crc32c(payload)


class _Counting:
    """A socket that counts the reads it served."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.reads = sock, 0

    def recv_into(self, into: memoryview) -> int:
        self.reads += 1
        return self.sock.recv_into(into)

    def setsockopt(self, *option: Any) -> None:
        self.sock.setsockopt(*option)


def _dribble(sock: socket.socket, body: bytes, pieces: int) -> None:
    sock.sendall(b"$%d\r\n" % len(body))
    step = len(body) // pieces
    for at in range(0, len(body), step):
        time.sleep(0.01)
        sock.sendall(body[at : at + step])
    sock.sendall(b"\r\n")


@pytest.mark.parametrize("whole", [True, False])
def test_a_loopback_reader_is_woken_once_per_body(whole: bool) -> None:
    body = os.urandom(200_000)
    with socket.create_server(("127.0.0.1", 0)) as server:
        near = socket.create_connection(server.getsockname())
        far, _ = server.accept()
    with near, far:
        near.settimeout(10)
        writer = threading.Thread(target=_dribble, args=(far, body, 20))
        writer.start()
        counting = _Counting(near)
        reader = RespReader(counting, whole=whole)  # type: ignore[arg-type]
        kind, size = reader._header()
        counting.reads = 0  # from here on: the body's reads, then its CRLF's
        checked = reader._checked_body(int(size), None)
        writer.join()
        assert (kind, bytes(checked.data)) == (ord("$"), body)
        assert checked.crc == crc32c(body)
        # Woken once the whole body is there, instead of once per piece.
        assert counting.reads <= 2 if whole else counting.reads > 2
        assert near.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


def test_loopback_connections_wait_for_whole_bodies(real_conn: RedisConnection) -> None:
    payload = os.urandom((1 << 20) - 1024)
    real_conn.client.xadd("s", {b"d": payload})
    [(_, fields)] = _read(real_conn)
    assert bytes(fields[1].data) == payload
    pool = real_conn.blocking.connection_pool
    connection = pool.get_connection()
    try:
        assert connection.loopback
        assert connection._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
    finally:
        pool.release(connection)


# -- chunk entries in the sender's layout, matched in one step ------------------------------


def _chunk_entries(conn: RedisConnection, headers: list[bytes]) -> list[bytes]:
    bodies = [os.urandom(1000 + 7 * i) for i in range(len(headers))]
    for i, (header, body) in enumerate(zip(headers, bodies, strict=True)):
        conn.client.xadd("s", {b"h": header, b"d": body}, id=f"{i + 1}-0")
    return bodies


def _parse_all(conn: RedisConnection, monkeypatch: pytest.MonkeyPatch, fast: bool) -> Any:
    if not fast:
        monkeypatch.setattr(respreader, "_CHUNK_ENTRY", re.compile(rb"(?!)"))  # never matches
    entries = _read(conn)
    monkeypatch.undo()
    return [
        (eid, [f.data if isinstance(f, Checked) else f for f in fields]) for eid, fields in entries
    ]


@pytest.mark.parametrize(
    "header",
    [
        b'{"v":2,"seq":0}',
        b"",  # empty value
        b"forged\r\nheader",  # CR LF inside: the declared length tells
        b"x\r\n$1\r\nd\r\n$3\r\n",  # looks like the rest of an entry
        b"\r",
    ],
)
def test_chunk_entries_parse_the_same_with_and_without_the_one_step_match(
    real_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch, header: bytes
) -> None:
    bodies = _chunk_entries(real_conn, [header, b'{"v":2,"seq":1}'])
    fast = _parse_all(real_conn, monkeypatch, fast=True)
    slow = _parse_all(real_conn, monkeypatch, fast=False)
    assert fast == slow
    assert [bytes(fields[3]) for _, fields in fast] == bodies
    assert [fields[1] for _, fields in fast] == [header, b'{"v":2,"seq":1}']


def test_other_layouts_are_parsed_line_by_line(real_conn: RedisConnection) -> None:
    body = os.urandom(5000)
    real_conn.client.xadd("s", {b"d": body, b"h": b"{}"})  # body first
    real_conn.client.xadd("s", {b"h": b"{}", b"d": body, b"x": b"1"})  # an extra field
    first, second = (fields for _, fields in _read(real_conn))
    assert (first[0], bytes(first[1].data), first[2:]) == (b"d", body, [b"h", b"{}"])
    assert second[:3] == [b"h", b"{}", b"d"]
    assert (bytes(second[3].data), second[4:]) == (body, [b"x", b"1"])


def test_the_one_step_match_reads_fewer_lines(
    real_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    _chunk_entries(real_conn, [b'{"v":2}'] * 4)
    lines = {"n": 0}
    header = RespReader._header

    def counted(self: RespReader) -> Any:
        lines["n"] += 1
        return header(self)

    monkeypatch.setattr(RespReader, "_header", counted)
    _read(real_conn)
    # The reply's own lines (array, key, entry count) plus one line per entry.
    assert lines["n"] <= 4 + 4


# -- a receiver's kept connection ------------------------------------------------------------


def _session_read(session: ReadSession, block: int | None = None) -> Any:
    command: tuple[Any, ...] = ("XREAD", "COUNT", 10)
    if block is not None:
        command += ("BLOCK", block)
    replies = session.round_trip([("CLIENT", "ID"), (*command, "STREAMS", "s", "0-0")])
    assert replies is not None
    return replies


def _in_use(conn: RedisConnection) -> int:
    return len(conn.blocking.connection_pool._in_use_connections)


def test_a_read_session_keeps_one_connection_and_gives_it_back(real_conn: RedisConnection) -> None:
    real_conn.client.xadd("s", {b"h": b"{}", b"d": os.urandom(70_000)})
    before = _in_use(real_conn)
    session = ReadSession(real_conn.blocking)
    ids = {_session_read(session)[0] for _ in range(5)}
    assert len(ids) == 1
    assert _in_use(real_conn) == before + 1
    session.close()
    session.close()  # idempotent
    assert _in_use(real_conn) == before


def test_a_read_session_survives_a_killed_connection(real_conn: RedisConnection) -> None:
    payload = os.urandom(70_000)
    real_conn.client.xadd("s", {b"h": b"{}", b"d": payload})
    session = ReadSession(real_conn.blocking)
    try:
        first = _session_read(session)[0]
        real_conn.client.client_kill_filter(_id=first)  # while idle: nothing fails
        second, [(_, [(_, fields)])] = _session_read(session)
        assert second != first
        assert bytes(fields[3].data) == payload
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                session.round_trip([("BLPOP", "raw:never", 5)])
            except BaseException as exc:  # checked below
                errors.append(exc)

        reader = threading.Thread(target=blocked)
        reader.start()
        deadline = time.monotonic() + 5
        while b"cmd=blpop" not in real_conn.client.execute_command("CLIENT", "LIST", "ID", second):
            assert time.monotonic() < deadline, "the call never blocked"
            time.sleep(0.01)
        real_conn.client.client_kill_filter(_id=second)  # during a call: it raises
        reader.join(10)
        assert [type(e) for e in errors] == [RedisConnectionError]
        third, [(_, [(_, fields)])] = _session_read(session)  # and the next call reconnects
        assert third not in (first, second)
        assert bytes(fields[3].data) == payload
    finally:
        session.close()


def test_a_busy_read_session_lends_a_pooled_connection(real_conn: RedisConnection) -> None:
    session = ReadSession(real_conn.blocking)
    got: list[Any] = []
    try:
        held = _session_read(session)[0]
        blocker = threading.Thread(target=lambda: got.append(_session_read(session, block=300)))
        blocker.start()
        time.sleep(0.1)
        other = _session_read(session)[0]  # the kept one is busy in the other thread
        blocker.join(10)
        assert other != held
        assert len(got) == 1
        assert got[0][0] == held
    finally:
        session.close()


def test_a_read_session_on_fakeredis_is_not_served(fake_conn: RedisConnection) -> None:
    session = ReadSession(fake_conn.blocking)
    assert session.round_trip([("XREAD", "STREAMS", "s", "0-0")]) is None
    session.close()

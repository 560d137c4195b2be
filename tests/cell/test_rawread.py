"""The raw XREAD reader: chunk bodies arrive with the CRC-32C of exactly their bytes."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import pytest
from crc32c import crc32c

from framework.cell.rawread import Checked, _Reader, round_trip
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
        reader = _Reader(counting, whole=whole)  # type: ignore[arg-type]
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

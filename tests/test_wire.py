"""framework.wire: the zero-copy packer, hiredis packing of short commands, loopback tuning."""

from __future__ import annotations

import ipaddress
import socket

import numpy as np
import pytest
import redis

from framework.buffers import Segments
from framework.connection import JOIN_BELOW, RedisConnection
from framework.wire import LOOPBACK_CONGESTION, ZeroCopySerializer, pack_small, unpaced


def test_packer_sends_segments_as_one_bulk_string_without_copies() -> None:
    seg = Segments([b"head:", np.arange(200_000, dtype=np.float64), "é→".encode(), b""])
    out = ZeroCopySerializer(6000, lambda v: v.encode() if isinstance(v, str) else v).pack(
        "SET", "k", seg
    )
    big = seg.parts[1]
    assert any(item is big for item in out), "the large part must be sent as-is"
    wire = b"".join(bytes(item) for item in out)
    assert wire == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % seg.nbytes + seg.join() + b"\r\n"


def test_packer_sends_memoryviews_by_byte_length() -> None:
    array = np.arange(10_000, dtype=np.int32)  # format "i": len(view) is the item count
    out = ZeroCopySerializer(6000, lambda v: v).pack(b"SET", b"k", array.data)
    wire = b"".join(bytes(item) for item in out)
    assert b"$40000\r\n" in wire
    assert wire.endswith(array.tobytes() + b"\r\n")


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", b"v"),
        ("XADD", "fw:cell:{c}:inbox", "MAXLEN", "~", 1000, "*", "h", b"{}", "d", b"x" * 5999),
        ("CONFIG GET", "maxmemory"),
        (b"CLIENT KILL", b"ID", 7),
        ("SET", "t\u00e9xt \u2192", -12),
        ("SET", "k", 1.5),  # floats and large values take the general path
        ("SET", "k", b"y" * 6001),
    ],
    ids=lambda a: repr(a)[:24],
)
def test_packer_fast_path_matches_redis_py(args: tuple[object, ...]) -> None:
    from redis.connection import Encoder, PythonRespSerializer

    encode = Encoder("utf-8", "strict", False).encode
    ours = b"".join(bytes(x) for x in ZeroCopySerializer(6000, encode).pack(*args))
    reference = b"".join(bytes(x) for x in PythonRespSerializer(6000, encode).pack(*args))
    assert ours == reference


def test_packer_honours_a_non_utf8_client_encoding() -> None:
    from redis.connection import Encoder

    encode = Encoder("latin-1", "strict", False).encode
    out = ZeroCopySerializer(6000, encode).pack("SET", "k", "\u00e9")
    assert b"".join(out).endswith(b"$1\r\n\xe9\r\n")


def _congestion(sock: socket.socket) -> bytes:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0")


def test_loopback_connections_are_unpaced(redis_url: str) -> None:
    with RedisConnection.from_url(redis_url) as conn:
        for client in (conn.client, conn.once, conn.blocking):
            connection = client.connection_pool.get_connection()
            try:
                assert ipaddress.ip_address(connection._sock.getpeername()[0]).is_loopback
                assert _congestion(connection._sock) == LOOPBACK_CONGESTION
            finally:
                client.connection_pool.release(connection)


class _Socket:
    """Records setsockopt calls; connected to ``peer``."""

    def __init__(self, peer: str, family: int = socket.AF_INET) -> None:
        self.family, self.peer, self.options = family, peer, []

    def getpeername(self) -> tuple[str, int]:
        return self.peer, 6379

    def setsockopt(self, *option: object) -> None:
        self.options.append(option)


def test_only_loopback_peers_get_another_congestion_control() -> None:
    for peer, family, changed in [
        ("127.0.0.1", socket.AF_INET, True),
        ("127.8.9.10", socket.AF_INET, True),
        ("::1", socket.AF_INET6, True),
        ("10.1.2.3", socket.AF_INET, False),
        ("2001:db8::1", socket.AF_INET6, False),
    ]:
        sock = _Socket(peer, family)
        unpaced(sock)  # type: ignore[arg-type]
        expected = [(socket.IPPROTO_TCP, socket.TCP_CONGESTION, LOOPBACK_CONGESTION)]
        assert sock.options == (expected if changed else []), peer
    with socket.socket(socket.AF_UNIX) as unix:
        unpaced(unix)  # not TCP: left alone, no error


def test_pack_small_packs_only_short_plain_commands(redis_url: str) -> None:
    with RedisConnection.from_url(redis_url) as conn:
        pool = conn.blocking.connection_pool
        connection = pool.get_connection()
        try:
            small = [("XREAD", "COUNT", 1, "STREAMS", "k", "0-0"), ("XADD", "a", "*", b"c", b"{}")]
            assert pack_small(connection, small) == b"".join(
                b"".join(connection.pack_command(*command)) for command in small
            )
            assert pack_small(connection, [("SET", "k", bytes(JOIN_BELOW + 1))]) is None
            assert pack_small(connection, [("SET", "k", memoryview(b"v"))]) is None
            assert pack_small(connection, [("SET", "k", 1.5)]) is None
        finally:
            pool.release(connection)
    plain = redis.Redis.from_url(redis_url, encoding="latin-1")
    try:
        # Not our packer, or text that hiredis would encode differently: not packed here.
        assert pack_small(plain.connection_pool.get_connection(), [("PING",)]) is None
    finally:
        plain.close()

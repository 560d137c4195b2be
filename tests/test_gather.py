"""Scatter-gather sends deliver every buffer, in order, also when the kernel takes them partly."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from framework._gather import MAX_IOV, send_gathered


@pytest.mark.parametrize(
    "sizes", [[1], [0, 5, 0], [70_000, 3, 1 << 20, 17], [7] * (MAX_IOV * 2 + 3)]
)
def test_send_gathered_delivers_everything_in_order(sizes: list[int]) -> None:
    items = [os.urandom(n) for n in sizes]
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # force partial sends
    received = bytearray()

    def read() -> None:
        while chunk := right.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        send_gathered(left, [memoryview(i) if n % 2 else i for n, i in enumerate(items)])
    finally:
        left.close()
        reader.join(10)
        right.close()
    assert bytes(received) == b"".join(items)


def test_large_segments_round_trip_through_one_sendmsg(real_conn) -> None:
    from framework.buffers import Segments

    parts = [os.urandom(100_000), b"", os.urandom(3), os.urandom(1 << 20)]
    real_conn.client.set("k", real_conn.bulk(Segments(parts)))
    assert real_conn.client.get("k") == b"".join(parts)

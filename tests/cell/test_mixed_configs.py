"""Cells with different settings: the receiver follows the sender's window."""

from __future__ import annotations

from framework.cell import CellConfig, Message
from framework.connection import RedisConnection
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector, payload


def test_a_receiver_with_a_larger_ack_interval_than_the_sender_s_window_still_acks(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    """SMALL's 256 KiB window against the default 8 MiB ack interval: no stall."""
    data = payload(20 * SMALL.chunk_size + 3)
    sender, receiver = make_cell(conn, "a", SMALL), make_cell(conn, "b", CellConfig())
    got = Collector()
    receiver.register_blob_cb("ch", "b", got.blob_cb)
    future = sender.send_blob("ch", "b", "b", Message({}, data))
    assert future.result(timeout=30) == len(data)
    assert got.wait(future.get_stream_id()).data == data

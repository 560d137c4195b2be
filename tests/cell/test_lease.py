"""One live receiving cell per name (``framework.cell.lease``)."""

from __future__ import annotations

import time

import pytest

from framework.cell import Message, StreamCell
from framework.cell.lease import LEASE_S
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from tests.cell.conftest import CellFactory
from tests.cell.helpers import SMALL, Collector


def test_a_second_live_cell_of_a_name_cannot_receive(
    conn: RedisConnection, make_cell: CellFactory
) -> None:
    first = make_cell(conn, "b")
    got = Collector()
    first.register_blob_cb("ch", "t", got.blob_cb)
    assert 0 < conn.client.pttl(conn.keys.receiver("b")) <= LEASE_S * 1000
    started = time.monotonic()
    # Two readers of one inbox would split the transfers between them.
    refused = pytest.raises(ConfigurationError, match="Another cell named 'b' is receiving")
    with StreamCell(conn, "b", config=SMALL) as twin, refused:
        twin.register_blob_cb("ch", "t", Collector().blob_cb)
    assert time.monotonic() - started > LEASE_S  # it waited for the lease to lapse first
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, b"x"))
    assert future.result(timeout=20) == 1
    assert got.wait(future.get_stream_id()).data == b"x"


def test_a_closed_cells_name_is_free_at_once(conn: RedisConnection, make_cell: CellFactory) -> None:
    with StreamCell(conn, "b", config=SMALL) as first:
        first.register_blob_cb("ch", "t", Collector().blob_cb)
    assert not conn.client.exists(conn.keys.receiver("b"))
    started = time.monotonic()
    make_cell(conn, "b").register_blob_cb("ch", "t", Collector().blob_cb)
    assert time.monotonic() - started < LEASE_S


@pytest.mark.parametrize("forge", ["string without ttl", "hash"])
def test_a_lease_key_no_cell_wrote_is_replaced(
    conn: RedisConnection, make_cell: CellFactory, forge: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A value without a TTL held the name forever: no cell of it could receive again."""
    key = conn.keys.receiver("b")
    if forge == "hash":
        conn.client.hset(key, "x", "1")
    else:
        conn.client.set(key, b"garbage")
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="framework.cell.lease"):
        cell = make_cell(conn, "b")
        got = Collector()
        cell.register_blob_cb("ch", "t", got.blob_cb)
    assert time.monotonic() - started < LEASE_S  # taken at once, not after a wait
    assert "held something no cell writes" in caplog.text
    assert 0 < conn.client.pttl(key) <= LEASE_S * 1000
    future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, b"x"))
    assert future.result(timeout=20) == 1
    assert got.wait(future.get_stream_id()).data == b"x"


def test_a_cell_whose_name_was_taken_takes_no_transfers_until_it_has_it_back(
    conn: RedisConnection, make_cell: CellFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A cell frozen for longer than its lease: another took the name meanwhile. Taking
    transfers all the same split them between two receivers (``recv`` in two places)."""
    cell = make_cell(conn, "b")
    got = Collector()
    cell.register_blob_cb("ch", "t", got.blob_cb)
    key = conn.keys.receiver("b")
    with caplog.at_level("WARNING", logger="framework.cell.lease"):
        conn.client.set(key, b"other-host:1:cafe", px=60_000)  # the name's new holder
        time.sleep(LEASE_S / 2)  # its next refresh finds the name taken
        future = make_cell(conn, "a").send_blob("ch", "t", "b", Message({}, b"x"))
        time.sleep(LEASE_S)
        assert got.items == {}  # left to the name's holder
        assert "lost its receiving lease to other-host:1:cafe" in caplog.text
        assert "takes no new transfers" in caplog.text
        conn.client.delete(key)  # the other cell is gone: the name is free again
        assert got.wait(future.get_stream_id(), 20).data == b"x"
        assert future.result(timeout=20) == 1
    assert "has its receiving lease back" in caplog.text

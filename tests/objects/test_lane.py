"""A mailbox reader's own connection: raw round trips, unanswered commands, reconnects."""

from __future__ import annotations

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendError, BackendUnavailable, ClosedError
from framework.objects.lane import Lane
from framework.redis_streams import fields_of

# One hash tag: on a cluster every command of a round trip goes to one node.
_STREAM, _TEXT = "fw:test:{lane}:s", "fw:test:{lane}:t"


def _xadd(value: bytes) -> tuple[object, ...]:
    return ("XADD", _STREAM, "*", "f", value)


def test_a_round_trip_answers_every_command_in_order(any_conn: RedisConnection) -> None:
    lane = Lane(any_conn, "test")
    try:
        eid, length, text = lane.round_trip([_xadd(b"1"), ("XLEN", _STREAM), ("GET", _TEXT)])
        assert isinstance(eid, bytes)
        assert (length, text) == (1, None)
        assert lane.round_trip([("XLEN", _STREAM)]) == [1]
    finally:
        lane.close()


def test_quiet_commands_are_applied_but_leave_no_reply_behind(any_conn: RedisConnection) -> None:
    lane = Lane(any_conn, "test")
    try:
        assert lane.round_trip([("XLEN", _STREAM)], quiet=[_xadd(b"1"), _xadd(b"2")]) == [2]
        # A stray reply would answer the next round trip in place of its own command.
        assert lane.round_trip([("GET", _TEXT), ("XLEN", _STREAM)]) == [None, 2]
        assert lane.round_trip([("XLEN", _STREAM)], quiet=[("INCR", _STREAM)]) == [2]
        assert lane.round_trip([("GET", _TEXT)]) == [None]  # the quiet error went unreported
    finally:
        lane.close()


def test_a_large_value_goes_out_whole_and_the_replies_still_line_up(
    any_conn: RedisConnection,
) -> None:
    value = bytes(range(256)) * 800  # over the size hiredis packs in one piece
    lane = Lane(any_conn, "test")
    try:
        assert lane.round_trip([("XLEN", _STREAM)], quiet=[_xadd(any_conn.bulk(value))]) == [1]
        assert lane.round_trip([("GET", _TEXT), ("XLEN", _STREAM)]) == [None, 1]
    finally:
        lane.close()
    [(_, fields)] = any_conn.client.xrange(_STREAM)
    assert fields[b"f"] == value


def test_an_error_reply_raises_once_every_reply_is_read(any_conn: RedisConnection) -> None:
    lane = Lane(any_conn, "test")
    try:
        with pytest.raises(BackendError, match="WRONGTYPE"):
            lane.round_trip([_xadd(b"1"), ("INCR", _STREAM), ("XLEN", _STREAM)])
        assert lane.round_trip([("XLEN", _STREAM)]) == [1]  # in step; the XADD was applied
    finally:
        lane.close()


@pytest.mark.integration
def test_a_killed_connection_fails_one_round_trip_then_reconnects(
    real_conn: RedisConnection, redis_url: str
) -> None:
    with RedisConnection.from_url(redis_url) as conn:
        lane = Lane(conn, "test")
        try:
            [first] = lane.round_trip([("CLIENT", "ID")])
            real_conn.client.client_kill_filter(_id=first)
            with pytest.raises(BackendUnavailable):
                lane.round_trip([("XLEN", _STREAM)])
            [second] = lane.round_trip([("CLIENT", "ID")])
            assert second != first
        finally:
            lane.close()


@pytest.mark.integration
def test_the_connection_is_held_until_close_and_refused_after_its_owner_closes(
    redis_url: str,
) -> None:
    with RedisConnection.from_url(redis_url) as conn:
        pool = conn.blocking.connection_pool
        lane = Lane(conn, "test")
        lane.round_trip([("XLEN", _STREAM)])
        lane.round_trip([("XLEN", _STREAM)])
        assert len(pool._in_use_connections) == 1  # one connection, kept between round trips
        lane.close()
        lane.close()
        assert len(pool._in_use_connections) == 0
        assert len(pool._available_connections) == 1
    with pytest.raises(ClosedError):
        lane.round_trip([("XLEN", _STREAM)])


def test_fields_of_takes_every_reply_shape() -> None:
    assert fields_of([b"a", b"1", b"b", b"2"]) == {b"a": b"1", b"b": b"2"}
    assert fields_of({b"a": b"1"}) == {b"a": b"1"}
    assert fields_of(None) == {}

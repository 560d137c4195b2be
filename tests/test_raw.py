"""One-round-trip helpers: replies in order, errors after every reply, a pinned connection
that survives being killed, is shared safely between threads and goes back to the pool."""

from __future__ import annotations

import threading
import time

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from framework._raw import PinnedConnection, round_trip
from framework.connection import RedisConnection


def _pool_sizes(conn: RedisConnection) -> tuple[int, int]:
    pool = conn.once.connection_pool
    return len(pool._in_use_connections), len(pool._available_connections)


def test_round_trip_returns_every_reply_in_order(real_conn: RedisConnection) -> None:
    replies = round_trip(
        real_conn.once, [("SET", "raw:a", b"1"), ("INCR", "raw:a"), ("GET", "raw:a")]
    )
    assert replies == [b"OK", 2, b"2"]  # raw replies: no response callbacks


def test_an_error_reply_is_raised_after_the_other_replies_were_read(
    real_conn: RedisConnection,
) -> None:
    real_conn.client.set("raw:text", "x")
    with pytest.raises(ResponseError):
        round_trip(real_conn.once, [("INCR", "raw:text"), ("SET", "raw:after", b"1")])
    assert real_conn.client.get("raw:after") == b"1"  # the command after the error ran
    assert round_trip(real_conn.once, [("PING",)]) == [b"PONG"]  # the connection is clean


def test_clients_it_does_not_serve_get_none(fake_conn: RedisConnection) -> None:
    assert round_trip(fake_conn.once, [("PING",)]) is None
    pinned = PinnedConnection(fake_conn.once)
    assert pinned.round_trip([("PING",)]) is None
    pinned.close()


def test_pinned_connection_is_kept_between_calls_and_given_back_on_close(
    real_conn: RedisConnection,
) -> None:
    before = _pool_sizes(real_conn)
    pinned = PinnedConnection(real_conn.once)
    ids = {pinned.round_trip([("CLIENT", "ID")])[0] for _ in range(5)}  # type: ignore[index]
    assert len(ids) == 1
    assert _pool_sizes(real_conn)[0] == before[0] + 1
    pinned.close()
    pinned.close()  # idempotent
    assert _pool_sizes(real_conn)[0] == before[0]


def test_pinned_connection_killed_while_idle_reconnects_without_failing(
    real_conn: RedisConnection,
) -> None:
    pinned = PinnedConnection(real_conn.once)
    try:
        (first,) = pinned.round_trip([("CLIENT", "ID")])  # type: ignore[misc]
        real_conn.client.client_kill_filter(_id=first)
        # Nothing was sent on the dead connection: the call goes out on a new one.
        second, stored = pinned.round_trip(  # type: ignore[misc]
            [("CLIENT", "ID"), ("SET", "raw:after-idle-kill", b"1")]
        )
        assert second != first
        assert stored == b"OK"
    finally:
        pinned.close()


def test_pinned_connection_killed_during_a_call_raises_then_reconnects(
    real_conn: RedisConnection,
) -> None:
    pinned = PinnedConnection(real_conn.once)
    (first,) = pinned.round_trip([("CLIENT", "ID")])  # type: ignore[misc]
    errors: list[BaseException] = []

    def blocked_read() -> None:
        try:
            pinned.round_trip([("BLPOP", "raw:never", 5)])
        except BaseException as exc:  # checked by the test
            errors.append(exc)

    reader = threading.Thread(target=blocked_read)
    reader.start()
    try:
        deadline = time.monotonic() + 5
        while b"cmd=blpop" not in real_conn.client.execute_command("CLIENT", "LIST", "ID", first):
            assert time.monotonic() < deadline, "the call never blocked"
            time.sleep(0.01)
        real_conn.client.client_kill_filter(_id=first)
        reader.join(10)
        assert len(errors) == 1
        assert isinstance(errors[0], RedisConnectionError)
        assert pinned.round_trip([("SET", "raw:after-kill", b"1")]) == [b"OK"]
    finally:
        reader.join(10)
        pinned.close()


def test_a_busy_pinned_connection_lends_a_pooled_one_to_other_threads(
    real_conn: RedisConnection,
) -> None:
    pinned = PinnedConnection(real_conn.once)
    ids: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                client_id, _ = pinned.round_trip(  # type: ignore[misc]
                    [("CLIENT", "ID"), ("INCR", "raw:count")]
                )
                ids.append(client_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    pinned.close()
    assert not errors
    assert real_conn.client.get("raw:count") == b"800"  # every command ran exactly once
    assert len(set(ids)) >= 1
    assert _pool_sizes(real_conn)[0] == 0

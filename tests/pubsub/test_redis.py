from __future__ import annotations

import threading
import time

import fakeredis
import pytest
import redis

from framework.buffers import Segments
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, MessageLossError, ReceiveTimeout
from framework.pubsub import (
    MessagePublisher,
    MessageSubscriber,
    RedisPublisher,
    RedisSubscriber,
    SegmentsPublisher,
)


def test_round_trip_on_every_backend(any_conn: RedisConnection) -> None:
    with (
        RedisSubscriber(any_conn, ["a", "b"], timeout=5) as sub,
        RedisPublisher(any_conn) as pub,
    ):
        assert isinstance(pub, MessagePublisher)
        assert isinstance(pub, SegmentsPublisher)
        assert isinstance(sub, MessageSubscriber)
        pub.send_message("a", b"one")
        pub.send_message("b", Segments([b"t", memoryview(b"wo")]))
        assert [sub.next_message(), next(sub)] == [b"one", b"two"]
        with pytest.raises(ReceiveTimeout):
            sub.next_message(timeout=0.1)


def test_channel_uses_the_key_schema(conn: RedisConnection) -> None:
    with RedisSubscriber(conn, "t", timeout=5) as sub:
        receivers = conn.client.publish(conn.keys.topic("t"), b"raw")
        assert receivers == 1
        assert sub.next_message() == b"raw"


def test_close_from_another_thread_stops_a_blocked_reader(conn: RedisConnection) -> None:
    sub = RedisSubscriber(conn, "t")
    threading.Timer(0.2, sub.close).start()
    started = time.monotonic()
    assert list(sub) == []
    assert time.monotonic() - started < 3
    sub.close()


def test_needs_a_topic(fake_conn: RedisConnection) -> None:
    with pytest.raises(ConfigurationError):
        RedisSubscriber(fake_conn, [])


def test_from_url_owns_its_connection(redis_url: str) -> None:
    with (
        RedisSubscriber.from_url(redis_url, "t", timeout=5) as sub,
        RedisPublisher.from_url(redis_url) as pub,
    ):
        pub.send_message("t", b"x")
        assert sub.next_message() == b"x"
    assert sub.connection._closed
    assert pub.connection._closed


def _kill_pubsub_clients(conn: RedisConnection, ports: tuple[int, ...]) -> int:
    killed = 0
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            killed += admin.client_kill_filter(_type="pubsub")
    return killed


@pytest.mark.parametrize("backend", ["real", "cluster"])
def test_killed_subscription_is_reported_once(backend: str, request: pytest.FixtureRequest) -> None:
    conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    server = request.getfixturevalue("redis_server" if backend == "real" else "redis_cluster")
    with RedisSubscriber(conn, "t", timeout=5) as sub, RedisPublisher(conn) as pub:
        pub.send_message("t", b"before")
        assert sub.next_message() == b"before"
        assert _kill_pubsub_clients(conn, server.ports) >= 1
        pub.send_message("t", b"lost")  # published while nobody is subscribed
        with pytest.raises(MessageLossError, match="interrupted") as info:
            sub.next_message()
        assert info.value.topic == "t"
        pub.send_message("t", b"after")
        assert sub.next_message() == b"after"
        with pytest.raises(ReceiveTimeout):  # reported once, not again
            sub.next_message(timeout=0.3)


@pytest.mark.parametrize("backend", ["real", "cluster"])
def test_an_interruption_right_after_another_is_reported_too(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """A flapping connection: the second drop comes well within a second of the first
    resubscription, and loses messages again."""
    conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    server = request.getfixturevalue("redis_server" if backend == "real" else "redis_cluster")
    with RedisSubscriber(conn, ["t", "u"], timeout=5) as sub, RedisPublisher(conn) as pub:
        for drop in range(2):
            assert _kill_pubsub_clients(conn, server.ports) >= 1
            pub.send_message("t", b"lost")  # published while nobody is subscribed
            # Sent once the subscriber is back: the loss is reported as it arrives.
            later = threading.Timer(0.2, pub.send_message, ("u", b"after %d" % drop))
            later.start()
            with pytest.raises(MessageLossError, match="interrupted"):
                sub.next_message()
            assert sub.next_message() == b"after %d" % drop
            later.join()
        with pytest.raises(ReceiveTimeout):  # each drop reported once
            sub.next_message(timeout=0.3)


def test_a_failing_release_still_closes_the_connection_the_shim_owns() -> None:
    from framework.pubsub._shim import RedisShim

    class Failing(RedisShim):
        def _release(self) -> None:
            raise RuntimeError("release failed")

    shim = Failing()
    shim.connection = RedisConnection(client=fakeredis.FakeRedis())
    shim._owns_connection = True
    with pytest.raises(RuntimeError, match="release failed"):
        shim.close()
    assert shim.connection._closed
    shim.close()  # idempotent: nothing is released twice

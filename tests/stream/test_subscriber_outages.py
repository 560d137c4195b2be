"""List and pub/sub subscribers ride out an unreachable Redis for ``max_outage``.

As durable subscribers do. Before, they raised ``BackendUnavailable`` after five failed
reads (about a second), so an outage of two seconds ended a consumer of a list or pub/sub
topic while one of a durable topic went on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendUnavailable, MessageLossError, ReceiveTimeout
from framework.pubsub import (
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from tests.stream.faults import RedisProcess, wait_for

pytestmark = pytest.mark.usefixtures("require_redis_server")

#: Seconds Redis stays down: well past the old limit of five reads 0.2 s apart.
DOWN = 3.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, aof=True).start()  # messages survive the restart
    yield server
    server.close()


def _through_an_outage(
    server: RedisProcess, read: Callable[[], None], publish: Callable[[], None]
) -> None:
    """Run ``read`` in a thread from before Redis goes down for ``DOWN`` s, ``publish`` after."""
    server.kill()
    restart = threading.Timer(DOWN, server.start)
    restart.start()
    reader = threading.Thread(target=read)
    try:
        reader.start()
        restart.join(30)
        publish()
        reader.join(30)
    finally:
        restart.cancel()
    assert not reader.is_alive(), "the reader did not finish"


def test_a_list_subscriber_waiting_through_the_outage_gets_what_follows(
    server: RedisProcess,
) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisQueueSubscriber(conn, "t", timeout=30)
        got: list[bytes] = []

        def publish() -> None:
            with RedisQueuePublisher(conn) as publisher:
                publisher.send_message("t", b"after")

        _through_an_outage(server, lambda: got.append(subscriber.next_message()), publish)
        assert got == [b"after"]
        subscriber.close()


def test_a_list_outage_longer_than_max_outage_is_raised(server: RedisProcess) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisQueueSubscriber(conn, "t", timeout=30, max_outage=1.0)
        server.kill()
        with pytest.raises(BackendUnavailable, match="pop from topic 't'"):
            subscriber.next_message()
        server.start()
        subscriber.close()


def _subscribed(server: RedisProcess) -> bool:
    with server.admin() as admin:
        return bool(admin.pubsub_numsub("fw:topic:{t}")[0][1])


def test_a_pubsub_subscriber_waiting_through_the_outage_reports_it_then_goes_on(
    server: RedisProcess,
) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisSubscriber(conn, "t", timeout=30)
        got: list[bytes | MessageLossError] = []

        def read() -> None:
            while not got or isinstance(got[-1], MessageLossError):
                try:
                    got.append(subscriber.next_message())
                except MessageLossError as loss:
                    got.append(loss)

        def publish() -> None:
            wait_for(lambda: _subscribed(server), what="the resubscription")
            with RedisPublisher(conn) as publisher:
                publisher.send_message("t", b"after")

        _through_an_outage(server, read, publish)
        [loss, message] = got  # the interruption is reported, never an error
        assert isinstance(loss, MessageLossError)
        assert "interrupted" in str(loss)
        assert message == b"after"
        subscriber.close()


def test_a_pubsub_outage_longer_than_max_outage_is_raised_and_ridden_out_again(
    server: RedisProcess,
) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisSubscriber(conn, "t", timeout=30, max_outage=1.0)
        server.kill()
        for _ in range(2):  # once per max_outage; it keeps trying in between
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="receive from topic"):
                subscriber.next_message()
            assert 1.0 <= time.monotonic() - started < 5
            assert subscriber.listening_since is None
        server.start()
        subscriber.close()


SUBSCRIBERS = {
    "list": RedisQueueSubscriber,
    "pubsub": RedisSubscriber,
    "durable": RedisStreamSubscriber,
}


@pytest.mark.parametrize("kind", list(SUBSCRIBERS))
def test_a_wait_that_ends_during_an_outage_says_so(server: RedisProcess, kind: str) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = SUBSCRIBERS[kind](conn, "t")
        server.kill()
        # Not just "no message": it could not look (before: nothing said so).
        with pytest.raises(ReceiveTimeout, match="Redis has been unreachable for the last"):
            subscriber.next_message(timeout=1.5)
        server.start()
        subscriber.close()

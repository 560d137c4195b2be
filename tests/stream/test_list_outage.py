"""A list subscriber rides out an unreachable Redis for ``max_outage``, as durable ones do.

Before, it raised ``BackendUnavailable`` after five failed pops (about a second), so an
outage of two seconds ended a consumer of a list topic while one of a durable topic
went on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendUnavailable
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber
from tests.stream.faults import RedisProcess

pytestmark = pytest.mark.usefixtures("require_redis_server")

#: Seconds Redis stays down: well past the old limit of five pops 0.2 s apart.
DOWN = 3.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path, aof=True).start()  # messages survive the restart
    yield server
    server.close()


def test_a_subscriber_waiting_through_the_outage_gets_what_follows(server: RedisProcess) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisQueueSubscriber(conn, "t", timeout=30)
        server.kill()
        restart = threading.Timer(DOWN, server.start)
        restart.start()
        try:
            # Popping the whole time Redis is down, then after it is back.
            got: list[bytes] = []
            reader = threading.Thread(target=lambda: got.append(subscriber.next_message()))
            reader.start()
            restart.join(30)
            with RedisQueuePublisher(conn) as publisher:
                publisher.send_message("t", b"after")
            reader.join(30)
        finally:
            restart.cancel()
        assert got == [b"after"]
        subscriber.close()


def test_an_outage_longer_than_max_outage_is_raised(server: RedisProcess) -> None:
    with RedisConnection.from_url(server.url) as conn:
        subscriber = RedisQueueSubscriber(conn, "t", timeout=30, max_outage=1.0)
        server.kill()
        with pytest.raises(BackendUnavailable, match="pop from topic 't'"):
            subscriber.next_message()
        server.start()
        subscriber.close()

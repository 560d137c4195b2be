"""ProxyStore's Redis shims (``proxystore.stream.shims.redis``), imports changed.

Pub/sub shims ``RedisPublisher(hostname, port)`` / ``RedisSubscriber(hostname, port,
topic)`` and the Redis list shims ``RedisQueuePublisher(hostname, port)`` /
``RedisQueueSubscriber(hostname, port, topic, *, timeout=None)``.
"""

from __future__ import annotations

import threading

import pytest

from framework.stream.shims.redis import (
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisSubscriber,
)


def test_pubsub_shims_from_hostname_and_port(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with (
        RedisSubscriber(host, port, "topic", timeout=10) as subscriber,
        RedisPublisher(host, port) as publisher,
    ):
        publisher.send_message("topic", b"one")
        publisher.send_message("topic", b"two")
        assert subscriber.next_message() == b"one"
        assert next(subscriber) == b"two"


def test_pubsub_shims_by_keyword_and_with_settings(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with (
        RedisSubscriber(hostname=host, port=port, topic=["a", "b"], db=2, timeout=10) as subscriber,
        RedisPublisher(hostname=host, port=port, db=2) as publisher,
    ):
        publisher.send_message("b", b"to b")
        assert subscriber.next_message() == b"to b"


def test_a_shim_refuses_a_bad_construction(redis_address: tuple[str, int]) -> None:
    host, _ = redis_address
    with pytest.raises(ValueError, match="port"):
        RedisPublisher(host, "6379")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="settings"):
        RedisPublisher(host, 1, no_such_setting=True)


def test_queue_shims_keep_messages_until_popped(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with RedisQueuePublisher(host, port) as publisher:
        for i in range(5):
            publisher.send_message("jobs", str(i).encode())
    with RedisQueueSubscriber(host, port, "jobs", timeout=5) as subscriber:
        assert [subscriber.next_message() for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]


def test_competing_queue_subscribers_get_each_message_once(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    with (
        RedisQueuePublisher(host, port) as publisher,
        RedisQueueSubscriber(host, port, "work", timeout=5) as one,
        RedisQueueSubscriber(host, port, "work", timeout=5) as two,
    ):
        for i in range(6):
            publisher.send_message("work", b"%d" % i)
        got = [one.next_message(), two.next_message(), one.next_message()]
        got += [two.next_message(), one.next_message(), two.next_message()]
        assert sorted(got) == [b"%d" % i for i in range(6)]


def test_queue_subscriber_timeout_is_a_timeout_error(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with (
        RedisQueueSubscriber(host, port, "empty", timeout=0.2) as subscriber,
        pytest.raises(TimeoutError),
    ):
        subscriber.next_message()


def test_closing_a_queue_subscriber_ends_a_blocked_read(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisQueueSubscriber(host, port, "idle")
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            subscriber.next_message()
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    reader = threading.Thread(target=read, name="queue-reader")
    reader.start()
    subscriber.close()
    subscriber.close()  # idempotent
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], StopIteration)

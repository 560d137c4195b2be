"""ProxyStore's Redis shims (``proxystore.stream.shims.redis``), imports changed.

Pub/sub shims ``RedisPublisher(hostname, port)`` / ``RedisSubscriber(hostname, port,
topic)`` and the Redis list shims ``RedisQueuePublisher(hostname, port)`` /
``RedisQueueSubscriber(hostname, port, topic, *, timeout=None)``. The last tests check
what the project adds: a clear error for a bad construction, and ``close()`` ending a
blocked read from another thread.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from framework.exceptions import ConfigurationError, UnknownStoreKindError
from framework.stream.shims.redis import (
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisSubscriber,
)


def test_pubsub_shims_from_hostname_and_port(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisSubscriber(host, port, "topic")
    publisher = RedisPublisher(host, port)
    try:
        publisher.send_message("topic", b"one")
        publisher.send_message("topic", b"two")
        assert subscriber.next_message() == b"one"
        assert next(subscriber) == b"two"
    finally:
        publisher.close()
        subscriber.close()


def test_pubsub_shims_by_keyword_with_redis_kwargs(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisSubscriber(hostname=host, port=port, topic=["a", "b"], db=2)
    publisher = RedisPublisher(hostname=host, port=port, db=2)
    try:
        publisher.send_message("b", b"to b")
        assert subscriber.next_message() == b"to b"
    finally:
        publisher.close()
        subscriber.close()


def test_pubsub_subscriber_with_the_topic_by_keyword(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisSubscriber(host, port, topic="kw")
    publisher = RedisPublisher(host, port=port)
    try:
        publisher.send_message("kw", b"by keyword")
        assert subscriber.next_message() == b"by keyword"
    finally:
        publisher.close()
        subscriber.close()


def test_queue_shims_keep_messages_until_popped(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    publisher = RedisQueuePublisher(host, port)
    for i in range(5):
        publisher.send_message("jobs", str(i).encode())
    publisher.close()
    subscriber = RedisQueueSubscriber(host, port, "jobs", timeout=5)
    try:
        assert [subscriber.next_message() for _ in range(5)] == [b"0", b"1", b"2", b"3", b"4"]
    finally:
        subscriber.close()


def test_competing_queue_subscribers_get_each_message_once(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    publisher = RedisQueuePublisher(host, port)
    one = RedisQueueSubscriber(host, port, "work", timeout=5)
    two = RedisQueueSubscriber(host, port, "work", timeout=5)
    try:
        for i in range(6):
            publisher.send_message("work", b"%d" % i)
        got = [one.next_message(), two.next_message(), one.next_message()]
        got += [two.next_message(), one.next_message(), two.next_message()]
        assert sorted(got) == [b"%d" % i for i in range(6)]
    finally:
        for shim in (publisher, one, two):
            shim.close()


def test_queue_subscriber_timeout_is_a_timeout_error(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisQueueSubscriber(host, port, "empty", timeout=1)
    try:
        with pytest.raises(TimeoutError):
            subscriber.next_message()
    finally:
        subscriber.close()


def test_a_shim_refuses_a_bad_construction(redis_address: tuple[str, int]) -> None:
    host, _ = redis_address
    with pytest.raises(ValueError, match="port"):
        RedisPublisher(host, "sixty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="settings"):
        RedisPublisher(host, 1, no_such_setting=True)


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


def test_the_queue_shims_raise_what_proxystore_users_catch() -> None:
    """ProxyStore's queue shims raise ``queue.Empty`` and ``queue.Full``."""
    import queue as queue_module

    from framework.stream import StreamConsumer
    from framework.stream.shims.queue import QueuePublisher, QueueSubscriber

    with (
        pytest.raises(queue_module.Empty),
        QueueSubscriber(queue_module.Queue(), timeout=0.1) as sub,
    ):
        StreamConsumer[int](sub).next()
    with pytest.raises(TimeoutError):  # and still this project's ReceiveTimeout
        QueueSubscriber(queue_module.Queue(), block=False).next_message()
    publisher = QueuePublisher({"a": queue_module.Queue(maxsize=1)}, block=False)
    publisher.send_message("a", b"x")
    with pytest.raises(queue_module.Full):
        publisher.send_message("a", b"y")


def test_redis_py_keywords_and_a_string_port_work_as_under_proxystore(
    redis_address: tuple[str, int],
) -> None:
    """ProxyStore passes them to redis-py; they were refused ("Extra inputs ...")."""
    host, port = redis_address
    tuning: dict[str, Any] = {
        "socket_connect_timeout": 2,
        "health_check_interval": 5,
        "retry_on_timeout": True,
        "client_name": "worker-1",
        "decode_responses": False,
    }
    text_port: Any = str(port)
    subscriber = RedisSubscriber(host, text_port, "kw", **tuning)
    publisher = RedisPublisher(host, text_port, **tuning)
    try:
        assert publisher.connection.settings.connect_timeout == 2
        publisher.send_message("kw", b"one")
        assert subscriber.next_message() == b"one"
    finally:
        publisher.close()
        subscriber.close()
    with pytest.raises(ConfigurationError, match="decode_responses=True cannot be used"):
        RedisQueueSubscriber(host, port, "kw", decode_responses=True)


def test_proxystores_other_import_paths_and_keyword_names() -> None:
    from framework.exceptions import TopicClosedError
    from framework.store import StoreConfig, get_or_create_store
    from framework.stream.exceptions import TopicClosedError as FromStream

    assert FromStream is TopicClosedError
    with pytest.raises(UnknownStoreKindError):  # reached the config: the keyword is taken
        get_or_create_store(store_config=StoreConfig(name="x", kind="no-such-kind"))

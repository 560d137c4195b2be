from __future__ import annotations

import queue
import threading
import time

import pytest

from framework.buffers import Segments
from framework.exceptions import BackendTimeout, ClosedError, ConfigurationError, ReceiveTimeout
from framework.pubsub import MessagePublisher, MessageSubscriber, QueuePublisher, QueueSubscriber


def test_messages_flow_in_order_and_satisfy_the_protocols() -> None:
    q: queue.Queue[bytes] = queue.Queue()
    with QueuePublisher({"t": q}) as pub, QueueSubscriber(q, timeout=1) as sub:
        assert isinstance(pub, MessagePublisher)
        assert isinstance(sub, MessageSubscriber)
        pub.send_message("t", b"one")
        pub.send_message("t", Segments([b"tw", b"o"]))
        assert [next(sub), sub.next_message()] == [b"one", b"two"]


def test_unknown_topic_and_closed_publisher() -> None:
    pub = QueuePublisher({"t": queue.Queue()})
    with pytest.raises(ConfigurationError, match="'u'"):
        pub.send_message("u", b"x")
    pub.close()
    pub.close()
    with pytest.raises(ClosedError):
        pub.send_message("t", b"x")


def test_full_bounded_queue_times_out() -> None:
    pub = QueuePublisher({"t": queue.Queue(maxsize=1)}, timeout=0.05)
    pub.send_message("t", b"x")
    with pytest.raises(BackendTimeout, match="'t'"):
        pub.send_message("t", b"y")


def test_timeouts_constructor_and_per_call() -> None:
    sub = QueueSubscriber(queue.Queue(), timeout=0.1)
    started = time.monotonic()
    with pytest.raises(ReceiveTimeout):
        sub.next_message()
    with pytest.raises(ReceiveTimeout):
        sub.next_message(timeout=0)
    assert time.monotonic() - started < 1
    with pytest.raises(TimeoutError):  # ReceiveTimeout is a TimeoutError too
        QueueSubscriber(queue.Queue(), block=False).next_message()


def test_close_from_another_thread_ends_a_blocked_reader() -> None:
    sub = QueueSubscriber(queue.Queue())
    threading.Timer(0.1, sub.close).start()
    started = time.monotonic()
    assert list(sub) == []
    assert time.monotonic() - started < 1.5

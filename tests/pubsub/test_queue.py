from __future__ import annotations

import queue
import threading
import time

import pytest

from framework.buffers import Segments
from framework.exceptions import BackendTimeout, ClosedError, ConfigurationError, ReceiveTimeout
from framework.pubsub import MessagePublisher, MessageSubscriber, QueuePublisher, QueueSubscriber
from framework.stream import StreamConsumer, StreamProducer


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


def test_producer_refuses_a_topic_without_a_queue_and_still_closes() -> None:
    # The message for an unmapped topic used to stay pending: every later flush and
    # close() raised, and the producer could never be closed.
    mapped: queue.Queue[bytes] = queue.Queue()
    producer = StreamProducer[int](QueuePublisher({"a": mapped}), batch_size=2)
    producer.send("a", 1)
    with pytest.raises(ConfigurationError, match=r"topic 'b' \(mapped topics: 'a'\)"):
        producer.send("b", 2)
    with pytest.raises(ConfigurationError, match="topic 'c'"):
        producer.close_topics("c")
    producer.send("a", 3)
    producer.close(topics=["a"])
    producer.close()
    with StreamConsumer[int](QueueSubscriber(mapped, timeout=1)) as consumer:
        assert list(consumer) == [1, 3]


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

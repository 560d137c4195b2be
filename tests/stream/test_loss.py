"""Loss is reported, duplicates are dropped, a failed publish is resent (in-process)."""

from __future__ import annotations

import queue
from typing import Any

import pytest

from framework.buffers import Segments
from framework.exceptions import BackendUnavailable, MessageLossError, ReceiveTimeout
from framework.pubsub import QueueSubscriber
from framework.stream import StreamConsumer, StreamProducer


class _Flaky:
    """A publisher that drops, duplicates or fails chosen messages (by send number)."""

    accepts_segments = True

    def __init__(self, *, drop: set[int] = frozenset(), fail: set[int] = frozenset()) -> None:
        self.q: queue.Queue[bytes] = queue.Queue()
        self.drop, self.fail = set(drop), set(fail)
        self.sent = 0
        self.deliver_failed = False  # a "failed" send that reached Redis anyway

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        n, self.sent = self.sent, self.sent + 1
        data = message.join() if isinstance(message, Segments) else message
        if n in self.fail:
            if self.deliver_failed:
                self.q.put(data)
            raise BackendUnavailable("The connection dropped.")
        if n not in self.drop:
            self.q.put(data)

    def close(self) -> None:
        pass


def _consumer(pub: _Flaky, **kwargs: Any) -> StreamConsumer[int]:
    return StreamConsumer[int](QueueSubscriber(pub.q, timeout=2, topics=["t"]), **kwargs)


def _send(pub: _Flaky, n: int) -> StreamProducer[int]:
    producer = StreamProducer[int](pub, producer_id="p1")
    for i in range(n):
        producer.send("t", i)
    return producer


def test_gap_raises_then_the_stream_continues() -> None:
    pub = _Flaky(drop={2, 3})
    _send(pub, 6).close(topics=["t"])
    consumer = _consumer(pub)
    assert [consumer.next_object(), consumer.next_object()] == [0, 1]
    with pytest.raises(MessageLossError) as info:
        consumer.next_object()
    err = info.value
    assert (err.topic, err.producer, err.expected, err.received) == ("t", "p1", 2, 4)
    assert "Lost 2 event(s)" in str(err)
    assert list(consumer.iter_objects()) == [4, 5]


def test_lost_end_of_stream_is_still_detected_by_the_next_batch() -> None:
    pub = _Flaky(drop={1})
    producer = _send(pub, 3)
    producer.close(topics=["t"])
    consumer = _consumer(pub, on_loss="warn")
    with pytest.warns(RuntimeWarning, match="expected 1, received 2"):
        assert list(consumer.iter_objects()) == [0, 2]


def test_callable_policy_receives_the_error() -> None:
    pub = _Flaky(drop={1})
    _send(pub, 3).close(topics=["t"])
    seen: list[MessageLossError] = []
    assert list(_consumer(pub, on_loss=seen.append).iter_objects()) == [0, 2]
    assert [(e.expected, e.received) for e in seen] == [(1, 2)]


def test_failed_publish_is_kept_and_resent_with_the_same_numbers() -> None:
    pub = _Flaky(fail={1})
    producer = StreamProducer[int](pub, producer_id="p1")
    producer.send("t", 0)
    with pytest.raises(BackendUnavailable):
        producer.send("t", 1)
    producer.send("t", 2)  # resends the pending message first, in order
    producer.close(topics=["t"])
    assert list(_consumer(pub).iter_objects()) == [0, 1, 2]


def test_duplicate_from_a_resend_that_had_arrived_is_dropped() -> None:
    pub = _Flaky(fail={1})
    pub.deliver_failed = True  # the reply was lost, not the message
    producer = StreamProducer[int](pub, producer_id="p1")
    producer.send("t", 0)
    with pytest.raises(BackendUnavailable):
        producer.send("t", 1)
    producer.close(topics=["t"])
    assert list(_consumer(pub).iter_objects()) == [0, 1]


def test_interrupted_subscription_is_reported_even_without_a_later_gap() -> None:
    class Interrupted(QueueSubscriber):
        calls = 0

        def next_message(self, **kwargs: Any) -> bytes:
            self.calls += 1
            if self.calls == 2:
                raise MessageLossError("The subscription was interrupted.", topic="t")
            return super().next_message(**kwargs)

        def poll_message(self) -> bytes | None:
            try:
                return self.next_message(timeout=0)
            except ReceiveTimeout:
                return None

    q: queue.Queue[bytes] = queue.Queue()
    pub = _Flaky()
    pub.q = q
    _send(pub, 3).close(topics=["t"])
    consumer = StreamConsumer[int](Interrupted(q, timeout=2, topics=["t"]))
    assert consumer.next_object() == 0
    with pytest.raises(MessageLossError, match="interrupted"):
        consumer.next_object()
    assert list(consumer.iter_objects()) == [1, 2]

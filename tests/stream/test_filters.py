from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.pubsub import (
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.stream import NullFilter, SamplingFilter, StreamConsumer, StreamProducer


def test_null_filter_keeps_everything() -> None:
    assert NullFilter()({"anything": 1}) is False


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_sampling_filter_rejects_bad_probability(p: float) -> None:
    with pytest.raises(ConfigurationError, match="must be in"):
        SamplingFilter(p)
    with pytest.raises(ValueError):  # ConfigurationError is also a ValueError (seed meaning)
        SamplingFilter(p)


def test_sampling_filter_extremes_and_rate() -> None:
    assert not any(SamplingFilter(0)({}) for _ in range(200))
    assert all(SamplingFilter(1)({}) for _ in range(200))
    dropped = sum(SamplingFilter(0.5)({}) for _ in range(4000))
    assert 1600 < dropped < 2400


def _raising_filter(metadata: dict[str, Any]) -> bool:
    if metadata["i"] == 1:
        raise RuntimeError("filter boom")
    return False


def _outcomes(consumer: StreamConsumer[Any], n: int) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        try:
            out.append(consumer.next_object())
        except StopIteration:
            out.append("end")
        except RuntimeError as exc:
            out.append(str(exc))
    return out


@pytest.mark.parametrize("batch_size", [1, 5])
@pytest.mark.parametrize("transport", ["pubsub", "durable", "list"])
def test_a_filter_that_raises_costs_its_own_event_only(
    conn: RedisConnection, transport: str, batch_size: int
) -> None:
    """As in ProxyStore: the error is raised in that event's turn, and the stream goes on.

    Before, the error dropped the whole batch (its end-of-stream too), without a loss
    report; with batches of one, it was raised before the event ahead of it.
    """
    publisher, subscriber = {
        "pubsub": (RedisPublisher, lambda: RedisSubscriber(conn, "t")),
        "durable": (RedisStreamPublisher, lambda: RedisStreamSubscriber(conn, "t")),
        "list": (RedisQueuePublisher, lambda: RedisQueueSubscriber(conn, "t")),
    }[transport]
    consumer = StreamConsumer[Any](subscriber(), filter_=_raising_filter, timeout=5)
    producer = StreamProducer[Any](publisher(conn), batch_size=batch_size)
    for i in range(5):
        producer.send("t", i, metadata={"i": i})
    producer.close(topics=["t"])
    assert _outcomes(consumer, 6) == [0, "filter boom", 2, 3, 4, "end"]
    consumer.close()

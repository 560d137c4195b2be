"""ProxyStore's ``StreamProducer``/``StreamConsumer`` over its Redis shims, imports changed.

Stores are built as ``Store(name, RedisConnector(hostname, port))`` and shims as
``RedisPublisher(hostname, port)`` / ``RedisSubscriber(hostname, port, topic)`` or the
list shims; the producer also runs in another process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

from framework.connectors.redis import RedisConnector
from framework.proxy import Proxy, extract
from framework.store import Store, get_store
from framework.stream import StreamConsumer, StreamProducer
from framework.stream.filters import NullFilter, SamplingFilter
from framework.stream.shims.redis import (
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisSubscriber,
)


def test_store_topic_yields_proxies(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    store = Store("stream-store", RedisConnector(host, port), register=True)
    subscriber = RedisSubscriber(host, port, "results")
    with StreamProducer[dict[str, int]](
        RedisPublisher(host, port), stores={"results": store}, batch_size=3
    ) as producer:
        for i in range(7):
            producer.send("results", {"i": i}, metadata={"i": i})
        producer.close_topics("results")
    with StreamConsumer[dict[str, int]](subscriber, filter_=NullFilter()) as consumer:
        first = consumer.next()
        assert isinstance(first, Proxy)
        assert extract(first) == {"i": 0}
        meta, obj = consumer.next_object_with_metadata()
        assert (meta, obj) == ({"i": 1}, {"i": 1})
        assert [m["i"] for m, _ in consumer.iter_with_metadata()] == [2, 3, 4, 5, 6]
        consumer.close(stores=True)
    assert get_store("stream-store") is None  # closed, so unregistered


def test_default_store_aggregator_and_filters(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisQueueSubscriber(host, port, "sums", timeout=30)
    with Store("agg", RedisConnector(host, port), register=True) as store:
        with StreamProducer[list[int]](
            RedisQueuePublisher(host, port),
            default_store=store,
            aggregator=lambda batch: [sum(sum(b) for b in batch)],
            batch_size=2,
            filter_=SamplingFilter(0.0),
        ) as producer:
            for i in range(4):
                producer.send("sums", [i], evict=True)
            producer.close_topics("sums")
        with StreamConsumer[list[int]](subscriber) as consumer:
            assert list(consumer.iter_objects()) == [[1], [5]]


def test_a_topic_without_store_sends_objects_inline(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    subscriber = RedisSubscriber(host, port, "inline")
    with StreamProducer[str](RedisPublisher(host, port)) as producer:
        producer.send("inline", "small", metadata={"k": "v"})
        producer.close_topics("inline")
    with StreamConsumer[str](subscriber) as consumer:
        assert list(consumer.iter_objects_with_metadata()) == [({"k": "v"}, "small")]


def test_producer_in_another_process(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    script = textwrap.dedent(
        f"""
        from framework.connectors.redis import RedisConnector
        from framework.store import Store, get_store
        from framework.stream import StreamProducer
        from framework.stream.shims.redis import RedisQueuePublisher

        store = Store("remote-producer", RedisConnector({host!r}, {port}))
        with StreamProducer(RedisQueuePublisher({host!r}, {port}), stores={{"t": store}}) as p:
            for i in range(20):
                p.send("t", {{"i": i, "blob": bytes(1000)}}, metadata={{"i": i}})
            p.close(topics=["t"], stores=True)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    subscriber = RedisQueueSubscriber(host, port, "t", timeout=30)
    received: list[Any] = []
    with StreamConsumer[dict[str, Any]](subscriber) as consumer:
        for meta, obj in consumer.iter_objects_with_metadata():
            assert obj == {"i": meta["i"], "blob": bytes(1000)}
            received.append(meta["i"])
        consumer.close(stores=True)
    assert received == list(range(20))

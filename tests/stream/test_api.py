"""Every StreamProducer / StreamConsumer method of the seed, by name and meaning (in-process)."""

from __future__ import annotations

import datetime
import queue
import threading
import time
from typing import Any

import pytest
from framework_plugins.memory import MemoryStore

from framework.exceptions import (
    BadSignatureError,
    ClosedError,
    ConfigurationError,
    DeserializationError,
    ReceiveTimeout,
    SerializationError,
    TopicClosedError,
)
from framework.pubsub import QueuePublisher, QueueSubscriber
from framework.store import Proxy, extract, get_key, get_store, is_resolved, register_store
from framework.stream import (
    EventBatch,
    NullFilter,
    SamplingFilter,
    StreamConsumer,
    StreamProducer,
)

Pair = tuple[QueuePublisher, QueueSubscriber]


def _value(item: Any) -> Any:
    return extract(item) if isinstance(item, Proxy) else item


@pytest.fixture
def store() -> Any:
    with MemoryStore("mem") as store:
        yield store


def test_inline_send_iterate_and_end(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[Any](pub) as producer, StreamConsumer[Any](sub) as consumer:
        producer.send("a", {"x": 1}, metadata={"i": 0})
        producer.send("a", None)
        producer.close_topics("a", "b")
        assert consumer.next_with_metadata() == ({"i": 0}, {"x": 1})
        assert consumer.next() is None  # a None object survives the trip
        with pytest.raises(StopIteration):
            consumer.next()
        with pytest.raises(StopIteration):  # stays ended
            next(consumer)


def test_store_topic_yields_proxies_and_evicts(queue_pair: Pair, store: MemoryStore) -> None:
    pub, sub = queue_pair
    producer = StreamProducer[Any](pub, stores={"a": store, "b": None})
    consumer = StreamConsumer[Any](sub)
    producer.send("a", [1, 2], metadata={"k": "v"})
    producer.send("a", "kept", evict=False)
    producer.send("b", "inline")
    producer.close(topics=["a", "b"])
    metadata, proxy = consumer.next_with_metadata()
    assert metadata == {"k": "v"}
    assert isinstance(proxy, Proxy)
    assert not is_resolved(proxy)
    assert extract(proxy) == [1, 2]
    kept = consumer.next()
    assert kept == "kept"
    assert consumer.next() == "inline"  # topic without a store: the object itself
    assert list(consumer) == []
    assert len(store._memory.entries) == 1  # the evict=False object stays
    consumer.close(stores=True)
    consumer.close()


def test_next_object_variants_and_iterators(queue_pair: Pair, store: MemoryStore) -> None:
    pub, sub = queue_pair
    with StreamProducer[Any](pub, default_store=store, batch_size=3) as producer:
        for i in range(7):
            producer.send("a", None if i == 3 else i, metadata={"i": i})
        producer.close_topics("a", "b")
    consumer = StreamConsumer[Any](sub)
    assert consumer.next_object() == 0
    assert consumer.next_object_with_metadata() == ({"i": 1}, 1)
    pairs = consumer.iter_objects_with_metadata()
    assert next(pairs) == ({"i": 2}, 2)
    assert next(pairs) == ({"i": 3}, None)  # stored None is not "missing"
    assert next(consumer.iter_objects()) == 4
    rest = list(consumer.iter_with_metadata())
    # Item 5 was fetched ahead with item 4 (one round trip): a proxy, already resolved.
    assert [(m, _value(p)) for m, p in rest] == [({"i": 5}, 5), ({"i": 6}, 6)]
    assert isinstance(rest[0][1], Proxy)
    assert is_resolved(rest[0][1])
    assert not store._memory.entries  # every object was evicted on consumption
    consumer.close(stores=True)


def test_next_yields_proxies_also_after_next_object_fetched_ahead(
    queue_pair: Pair, store: MemoryStore
) -> None:
    """``next()`` gave the object itself (no ``get_key``) for items fetched ahead."""
    pub, sub = queue_pair
    with StreamProducer[Any](pub, stores={"a": store}, batch_size=3) as producer:
        for i in range(6):
            producer.send("a", {"i": i})
        producer.close_topics("a")
    consumer = StreamConsumer[Any](sub)
    got = [consumer.next(), consumer.next_object(), consumer.next(), consumer.next_object()]
    got += [consumer.next(), consumer.next()]
    for i in (0, 2, 4, 5):
        assert isinstance(got[i], Proxy), (i, type(got[i]))
        assert get_key(got[i]) is not None
        assert get_store(got[i]).name == "mem"
    assert [_value(item) for item in got] == [{"i": i} for i in range(6)]
    assert not store._memory.entries
    consumer.close(stores=True)


def test_iter_objects_runs_to_the_end_of_every_topic(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub) as producer:
        producer.send("a", 1)
        producer.close_topics("a")
        producer.send("b", 2)  # topic "a" has ended, but "b" has not
        producer.close_topics("b")
    with StreamConsumer[int](sub) as consumer:
        assert list(consumer.iter_objects()) == [1, 2]


def test_batch_size_flush_and_flush_topic(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    producer = StreamProducer[int](pub, batch_size=10)
    for i in range(3):
        producer.send("a", i)
    producer.send("b", 9)
    assert sub._queue.empty()  # partial batches stay buffered
    producer.flush_topic("a")
    assert sub._queue.qsize() == 1
    producer.flush()
    assert sub._queue.qsize() == 2
    producer.flush()  # nothing new: nothing sent
    assert sub._queue.qsize() == 2
    producer.close(topics=["a", "b"])
    with StreamConsumer[int](sub) as consumer:
        assert sorted(consumer.iter_objects()) == [0, 1, 2, 9]


def test_aggregator_merges_batches(queue_pair: Pair, store: MemoryStore) -> None:
    pub, sub = queue_pair
    producer = StreamProducer[list[int]](
        pub, aggregator=lambda b: [x for part in b for x in part], batch_size=2
    )
    producer.send("a", [1], metadata={"x": 1, "y": 1})
    producer.send("a", [2], metadata={"y": 2})
    producer.send("a", [3], evict=False)
    producer.close(topics=["a", "b"])
    with StreamConsumer[list[int]](sub) as consumer:
        assert list(consumer.iter_objects_with_metadata()) == [
            ({"x": 1, "y": 2}, [1, 2]),
            ({}, [3]),
        ]


def test_close_flushes_and_eos_is_sent_once(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    producer = StreamProducer[int](pub, batch_size=100)
    producer.send("a", 1)
    producer.close_topics("a")
    producer.close_topics("a")  # already ended: nothing resent
    producer.flush()
    with pytest.raises(TopicClosedError, match="'a'"):
        producer.send("a", 2)
    producer.send("b", 2)
    producer.close(topics=["b"])  # flushes the partial batch instead of dropping it
    producer.close()
    with pytest.raises(ClosedError):
        producer.send("b", 3)
    assert sub._queue.qsize() == 2
    with StreamConsumer[int](sub) as consumer:
        assert list(consumer.iter_objects()) == [1, 2]


def test_exit_flushes_without_ending_topics(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub, batch_size=100) as producer:
        producer.send("a", 1)
    consumer = StreamConsumer[int](sub, timeout=0.2)
    assert consumer.next_object() == 1
    with pytest.raises(ReceiveTimeout):
        consumer.next_object()
    consumer.close()


def test_linger_flushes_partial_batches(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub, batch_size=100, linger=0.05) as producer:
        producer.send("a", 1)
        started = time.monotonic()
        with StreamConsumer[int](sub, timeout=5) as consumer:
            assert consumer.next_object() == 1
        assert time.monotonic() - started < 2
        assert any(t.name == "fw-stream-linger" for t in threading.enumerate())
    assert not any(t.name == "fw-stream-linger" for t in threading.enumerate())


def test_send_is_thread_safe(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    producer = StreamProducer[int](pub, batch_size=7)

    def worker(base: int) -> None:
        for i in range(200):
            producer.send("a", base + i)

    threads = [threading.Thread(target=worker, args=(k * 1000,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    producer.close(topics=["a", "b"])
    with StreamConsumer[int](sub, timeout=5) as consumer:
        got = list(consumer.iter_objects())
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(200))


def test_producer_filter_drops_before_batching(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub, filter_=lambda m: m.get("drop", False)) as producer:
        producer.send("a", 1, metadata={"drop": True})
        producer.send("a", 2)
        producer.close_topics("a", "b")
    with StreamConsumer[int](sub) as consumer:
        assert list(consumer.iter_objects()) == [2]


def test_consumer_filter_evicts_dropped_objects(queue_pair: Pair, store: MemoryStore) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub, default_store=store) as producer:
        producer.send("a", 1, metadata={"drop": True})
        producer.send("a", 2, metadata={"drop": True}, evict=False)
        producer.send("a", 3)
        producer.close_topics("a", "b")
    with StreamConsumer[int](sub, filter_=lambda m: m.get("drop", False)) as consumer:
        assert list(consumer.iter_objects()) == [3]
        consumer.close(stores=True)
    assert len(store._memory.entries) == 1  # only the evict=False one is left


def test_builtin_filters_plug_in(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[int](pub, filter_=SamplingFilter(1.0)) as producer:
        producer.send("a", 1)
        producer.close_topics("a", "b")
    with StreamConsumer[int](sub, filter_=NullFilter()) as consumer:
        assert list(consumer) == []


def test_metadata_must_be_json(queue_pair: Pair) -> None:
    producer = StreamProducer[int](queue_pair[0])
    with pytest.raises(SerializationError, match="'a'"):
        producer.send("a", 1, metadata={"bad": object()})
    producer.close()


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"t": (1, 2)}, r"metadata\['t'\] is a tuple"),
        ({3: "x"}, "metadata has the key 3, not a str"),
        ({"d": [datetime.date(2020, 1, 1)]}, r"metadata\['d'\]\[0\] is a date"),
        ({"n": {"x": float("nan")}}, r"metadata\['n'\]\['x'\] is nan"),
    ],
    ids=["tuple", "int-key", "date", "nan"],
)
def test_metadata_that_json_would_change_is_refused_not_changed(
    queue_pair: Pair, metadata: dict[Any, Any], problem: str
) -> None:
    """A tuple would arrive as a list, 3 as "3": refused at the call instead."""
    producer = StreamProducer[int](queue_pair[0])
    with pytest.raises(SerializationError, match=problem):
        producer.send("a", 1, metadata=metadata)
    producer.send("a", 2, metadata={"ok": [1, 2.5, "x", None, True, {"k": []}]})
    producer.close()


def test_bad_arguments() -> None:
    pub = QueuePublisher({})
    with pytest.raises(ConfigurationError):
        StreamProducer[int](pub, batch_size=0)
    with pytest.raises(ConfigurationError):
        StreamProducer[int](pub, linger=0)
    with pytest.raises(ConfigurationError):
        StreamConsumer[int](QueueSubscriber(queue.Queue()), on_loss="ignore")  # type: ignore[arg-type]


def test_close_stores_closes_and_unregisters(queue_pair: Pair) -> None:
    pub = queue_pair[0]
    store = MemoryStore("reg")
    register_store(store)
    producer = StreamProducer[int](pub, default_store=store)
    producer.close(stores=True)
    assert store.closed
    assert get_store("reg") is None


class _EventQueue:
    """An event-level shim (does its own transport of EventBatch objects)."""

    def __init__(self) -> None:
        self.q: queue.Queue[EventBatch] = queue.Queue()

    def send_events(self, events: EventBatch) -> None:
        self.q.put(events)

    def next_events(self, timeout: float | None = None) -> EventBatch:
        return self.q.get(timeout=timeout)

    def __iter__(self) -> _EventQueue:
        return self

    def __next__(self) -> EventBatch:
        return self.next_events()

    def close(self) -> None:
        pass


def test_event_level_publisher_and_subscriber(store: MemoryStore) -> None:
    shim = _EventQueue()
    with StreamProducer[Any](shim, stores={"s": store}) as producer:
        producer.send("i", b"inline")
        producer.send("s", b"stored")
        producer.close_topics("i", "s")
    assert shim.q.qsize() == 4
    with StreamConsumer[Any](shim) as consumer:
        assert list(consumer.iter_objects()) == [b"inline", b"stored"]
        consumer.close(stores=True)


@pytest.mark.parametrize(("secret", "ok"), [(b"s" * 32, True), (b"t" * 32, False)])
def test_signed_messages(queue_pair: Pair, secret: bytes, ok: bool) -> None:
    pub, sub = queue_pair
    with StreamProducer[Any](pub, secret=b"s" * 32) as producer:
        producer.send("a", {"x": 1})
        producer.close_topics("a", "b")
    with StreamConsumer[Any](sub, secret=secret) as consumer:
        if ok:
            assert list(consumer.iter_objects()) == [{"x": 1}]
        else:
            with pytest.raises(BadSignatureError):
                consumer.next_object()


def test_json_only_consumer_refuses_pickled_inline_objects(queue_pair: Pair) -> None:
    pub, sub = queue_pair
    with StreamProducer[Any](pub) as producer:
        producer.send("a", {"x": 1})  # a dict takes the pickle serializer
        producer.send("a", b"raw")
        producer.close_topics("a", "b")
    with StreamConsumer[Any](sub, allow_pickle=False) as consumer:
        with pytest.raises(DeserializationError, match="allow_pickle"):
            consumer.next_object()
        assert consumer.next_object() == b"raw"


def test_topics_given_in_the_wrong_shape_fail_at_the_call(queue_pair: Pair) -> None:
    """close(topics="abc") ended topics a, b and c; close_topics(["x"]) raised TypeError."""
    publisher, _ = queue_pair
    producer = StreamProducer[Any](publisher)
    with pytest.raises(ConfigurationError, match=r"separate arguments.*not a list"):
        producer.close_topics(["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"a list of topic names, not the str 'ab'"):
        producer.close(topics="ab")
    producer.close(topics=["a", "b"])

"""ProxyStore's event API (``proxystore.stream.events``), imports changed.

Also an event-level shim written as ProxyStore's protocols describe one
(``send_events``/``next_events``), whose subscriber filters events by metadata and
evicts the dropped objects with ``event.get_key()``.
"""

from __future__ import annotations

import json
import queue
from typing import Any

import pytest

from framework.connectors.redis import RedisConnector
from framework.store import Store
from framework.stream import StreamConsumer, StreamProducer
from framework.stream.events import (
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    bytes_to_event,
    dict_to_event,
    event_to_bytes,
    event_to_dict,
)
from framework.stream.protocols import EventPublisher, EventSubscriber


@pytest.fixture
def store(redis_address: tuple[str, int]) -> Any:
    host, port = redis_address
    with Store("events", RedisConnector(host, port), register=True) as store:
        yield store


def test_new_object_key_event_from_key_and_get_key(store: Any) -> None:
    key = store.put("value")
    event = NewObjectKeyEvent.from_key(
        key, evict=True, metadata={"i": 1}, store_config=store.config(), topic="t"
    )
    assert event.get_key() == key
    assert (event.topic, event.evict, event.metadata) == ("t", True, {"i": 1})
    assert event.store_config == store.config()
    assert store.get(event.get_key()) == "value"


@pytest.mark.parametrize(
    "event",
    [
        EndOfStreamEvent("t"),
        NewObjectEvent("t", {"inline": [1, 2]}, {"m": 1}),
        EventBatch("t", [NewObjectEvent("t", b"raw", {}), EndOfStreamEvent("t")]),
    ],
    ids=["eos", "object", "batch"],
)
def test_events_round_trip_through_bytes_and_dicts(event: Any) -> None:
    assert bytes_to_event(event_to_bytes(event)) == event
    assert dict_to_event(event_to_dict(event)) == event


def test_key_events_and_batches_round_trip(store: Any) -> None:
    events = [
        NewObjectKeyEvent.from_key(
            k, evict=False, metadata={"n": n}, store_config=store.config(), topic="t"
        )
        for n, k in enumerate(store.put_batch(["a", "b"]))
    ]
    batch = EventBatch("t", [*events, EndOfStreamEvent("t")])
    for item in (events[0], batch):
        assert bytes_to_event(event_to_bytes(item)) == item
        assert dict_to_event(event_to_dict(item)) == item
    assert event_to_dict(events[0])["event_type"] == "NEW_OBJECT_KEY"
    assert event_to_dict(batch)["event_type"] == "EVENT_BATCH"


def test_events_are_json_on_the_wire_never_pickled(store: Any) -> None:
    key = store.put("v")
    event = NewObjectKeyEvent.from_key(
        key, evict=True, metadata={"i": 1}, store_config=store.config(), topic="t"
    )
    for item in (event, EventBatch("t", [event, EndOfStreamEvent("t")])):
        data = event_to_bytes(item)
        assert b"\x80\x05" not in data  # no pickle protocol 5 ...
        assert b"\x80\x04" not in data  # ... nor 4
        start = data.index(b"{")
        header, _ = json.JSONDecoder().raw_decode(data[start:].decode())
        assert key in json.dumps(header)


def test_a_batch_holds_the_objects_of_one_store(store: Any) -> None:
    other = store.config().model_copy(update={"name": "other"})
    one = NewObjectKeyEvent.from_key(
        "k1", evict=True, metadata={}, store_config=store.config(), topic="t"
    )
    two = NewObjectKeyEvent.from_key("k2", evict=True, metadata={}, store_config=other, topic="t")
    with pytest.raises(ValueError, match="one store"):
        EventBatch("t", [one, two])


class QueueEventPublisher:
    """An event publisher as ProxyStore's ``EventPublisher`` protocol describes one."""

    def __init__(self, events: queue.Queue[EventBatch]) -> None:
        self.events = events

    def send_events(self, events: EventBatch) -> None:
        self.events.put(events)

    def close(self) -> None:
        pass


class FilteringEventSubscriber:
    """An event subscriber that drops odd objects, evicting them through ``get_key()``."""

    def __init__(self, events: queue.Queue[EventBatch], store: Any) -> None:
        self.events, self.store = events, store
        self.dropped: list[str] = []

    def __iter__(self) -> FilteringEventSubscriber:
        return self

    def __next__(self) -> EventBatch:
        return self.next_events()

    def next_events(self) -> EventBatch:
        batch = self.events.get(timeout=10)
        kept = []
        for event in batch.events:
            if isinstance(event, NewObjectKeyEvent) and event.metadata["i"] % 2:
                self.store.evict(event.get_key())
                self.dropped.append(event.get_key())
                continue
            kept.append(event)
        return EventBatch(batch.topic, kept)

    def close(self) -> None:
        pass


def test_event_shims_see_topic_and_store_config_on_each_event(store: Any) -> None:
    channel: queue.Queue[EventBatch] = queue.Queue()
    publisher, subscriber = QueueEventPublisher(channel), FilteringEventSubscriber(channel, store)
    assert isinstance(publisher, EventPublisher)
    assert isinstance(subscriber, EventSubscriber)
    with StreamProducer[int](publisher, stores={"t": store}, batch_size=4) as producer:
        for i in range(8):
            producer.send("t", i, metadata={"i": i})
        producer.close_topics("t")
        sent = list(channel.queue)
        assert all(e.topic == "t" for batch in sent for e in batch.events)
        assert all(
            e.store_config == store.config()
            for batch in sent
            for e in batch.events
            if isinstance(e, NewObjectKeyEvent)
        )
    with StreamConsumer[int](subscriber) as consumer:
        assert list(consumer.iter_objects()) == [0, 2, 4, 6]
    assert len(subscriber.dropped) == 4
    assert not any(store.exists(key) for key in subscriber.dropped)


def test_decoding_does_not_run_the_construction_forms(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wire path validates fields natively; ProxyStore's forms are for callers only."""
    from framework.stream import _proxystore_events

    key = store.put("v")
    event = NewObjectKeyEvent.from_key(
        key, evict=True, metadata={}, store_config=store.config(), topic="t"
    )
    data = event_to_bytes(EventBatch("t", [event]))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a construction form ran while decoding")

    monkeypatch.setattr(_proxystore_events._EventAPI, "_positional_into", refuse)
    monkeypatch.setattr(_proxystore_events.BatchAPI, "_prepare", classmethod(refuse))
    monkeypatch.setattr(_proxystore_events.KeyEventAPI, "_prepare", classmethod(refuse))
    decoded = bytes_to_event(data)
    assert decoded.events[0].get_key() == key

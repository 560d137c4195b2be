"""Object streams: ProxyStore's ``proxystore.stream`` API over Redis.

A :class:`StreamProducer` buffers objects per topic, puts them in a
:class:`~framework.store.Store` (or carries small ones inline) and publishes
small, versioned JSON events through a publisher; a :class:`StreamConsumer`
iterates over them through a subscriber. Publishers and subscribers live in
:mod:`framework.pubsub`.

Example:
    ```python
    from framework.connection import RedisConnection
    from framework.pubsub import RedisPublisher, RedisSubscriber
    from framework.store import RedisStore
    from framework.stream import StreamConsumer, StreamProducer

    conn = RedisConnection.from_url("redis://127.0.0.1:6379")
    store = RedisStore("objects", connection=conn)
    with StreamConsumer[str](RedisSubscriber(conn, "t")) as consumer:
        with StreamProducer[str](RedisPublisher(conn), default_store=store) as producer:
            producer.send("t", "hello")
            producer.close_topics("t")
        assert list(consumer.iter_objects()) == ["hello"]
    ```
"""

from __future__ import annotations

from framework.stream._backlog import DEFAULT_BACKLOG_BYTES, DEFAULT_BACKLOG_OBJECTS, BacklogBound
from framework.stream.consumer import LOSS_GRACE, LossPolicy, StreamConsumer
from framework.stream.events import (
    EndOfStreamEvent,
    Event,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    bytes_to_event,
    dict_to_event,
    event_to_bytes,
    event_to_dict,
)
from framework.stream.filters import Filter, NullFilter, SamplingFilter
from framework.stream.producer import DEFAULT_OBJECT_TTL, INLINE_LIMIT, StreamProducer
from framework.stream.protocols import EventPublisher, EventSubscriber, Publisher, Subscriber

__all__ = [
    "DEFAULT_BACKLOG_BYTES",
    "DEFAULT_BACKLOG_OBJECTS",
    "DEFAULT_OBJECT_TTL",
    "INLINE_LIMIT",
    "LOSS_GRACE",
    "BacklogBound",
    "EndOfStreamEvent",
    "Event",
    "EventBatch",
    "EventPublisher",
    "EventSubscriber",
    "Filter",
    "LossPolicy",
    "NewObjectEvent",
    "NewObjectKeyEvent",
    "NullFilter",
    "Publisher",
    "SamplingFilter",
    "StreamConsumer",
    "StreamProducer",
    "Subscriber",
    "bytes_to_event",
    "dict_to_event",
    "event_to_bytes",
    "event_to_dict",
]

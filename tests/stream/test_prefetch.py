"""How many stored objects a consumer fetches per round trip: small ones together, large
ones (SINGLE_FETCH bytes or more) one by one (fakeredis and real Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.pubsub import RedisStreamPublisher, RedisStreamSubscriber
from framework.store import RedisStore, register_store, unregister_store
from framework.stream import StreamConsumer, StreamProducer
from framework.stream.consumer import SINGLE_FETCH


# The first fetch learns the objects' size: one object, then as many as the window allows.
@pytest.mark.parametrize(
    ("size", "per_fetch"), [(1024, [1, 5]), (SINGLE_FETCH + 1, [1] * 6)], ids=["small", "large"]
)
def test_objects_per_fetch_follow_their_size(
    conn: RedisConnection, monkeypatch: pytest.MonkeyPatch, size: int, per_fetch: list[int]
) -> None:
    fetched: list[int] = []
    real_get = RedisStore._get_each  # what the consumer fetches with

    def counting_get(self: RedisStore, keys: Any, *args: Any, **kwargs: Any) -> Any:
        fetched.append(len(keys))
        return real_get(self, keys, *args, **kwargs)

    monkeypatch.setattr(RedisStore, "_get_each", counting_get)
    payloads = [bytes([i]) * size for i in range(6)]
    with RedisStore("prefetch", connection=conn) as store:
        register_store(store)
        try:
            with StreamProducer[bytes](
                RedisStreamPublisher(conn), default_store=store, batch_size=6
            ) as producer:
                for payload in payloads:
                    producer.send("t", payload)
                producer.close_topics("t")
            subscriber = RedisStreamSubscriber(conn, "t", timeout=5)
            with StreamConsumer[bytes](subscriber, timeout=5) as consumer:
                assert list(consumer.iter_objects()) == payloads
        finally:
            unregister_store(store)
    assert fetched == per_fetch

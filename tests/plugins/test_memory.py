from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from framework_plugins.memory import MemoryStore

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.pubsub import RedisStreamPublisher
from framework.store import extract, get_or_create_store, store_kinds, unregister_store
from framework.store.base import Unreadable
from framework.stream import StreamProducer
from framework.testing import StoreContractTests


class TestMemoryStoreContract(StoreContractTests):
    @pytest.fixture
    def store(self) -> Iterator[MemoryStore]:
        with MemoryStore("mem") as store:
            yield store


def test_memory_kind_comes_from_the_entry_point() -> None:
    assert store_kinds()["memory"] is MemoryStore


def test_stores_of_one_segment_share_objects() -> None:
    with MemoryStore("a") as first:
        key = first.put([1, 2])
        with MemoryStore.from_config(first.config()) as second:
            assert second.segment == first.segment
            assert second.get(key) == [1, 2]


def test_objects_are_copies() -> None:
    items = [1, 2]
    with MemoryStore() as store:
        key = store.put(items)
        items.append(3)
        assert store.get(key) == [1, 2]


def test_segment_is_freed_with_its_last_store() -> None:
    store = MemoryStore()
    config = store.config()
    key = store.put("x")
    store.close()
    del store
    gc.collect()
    with MemoryStore.from_config(config) as fresh:
        assert not fresh.exists(key)


def test_unpickled_proxy_rebuilds_the_store_through_the_registry() -> None:
    with MemoryStore("rebuilt") as store:
        data = pickle.dumps(store.proxy({"v": 1}))
        proxy = pickle.loads(data)
        assert extract(proxy) == {"v": 1}
        rebuilt = get_or_create_store(store.config())
        assert isinstance(rebuilt, MemoryStore)
        assert rebuilt is not store
        unregister_store(rebuilt)
        rebuilt.close()


def test_an_unreadable_object_taken_by_an_evicting_read_is_put_back() -> None:
    with MemoryStore("corrupt") as store:
        key, good = store.put("corrupt me"), store.put("fine")
        store._memory.entries[key].value = b"garbage, not a frame"
        objs = store._get_each([key, good], evict=True)
        assert isinstance(objs[0], Unreadable)
        assert objs[1] == "fine"
        assert store.exists(key)  # kept as evidence
        assert not store.exists(good)
        assert store._memory.entries[key].value == b"garbage, not a frame"


_FOREIGN_CONSUMER = r"""
import sys
from framework.connection import RedisConnection
from framework.pubsub import RedisStreamSubscriber
from framework.stream import StreamConsumer
with RedisConnection.from_url(sys.argv[1]) as conn:
    subscriber = RedisStreamSubscriber(conn, sys.argv[2], timeout=15)
    with StreamConsumer(subscriber, timeout=15) as consumer:
        try:
            consumer.next_object()
        except Exception as exc:
            print(type(exc).__name__, exc)
"""


def test_a_consumer_in_another_process_is_told_why_a_memory_store_has_nothing(
    redis_server: EmbeddedRedis, real_conn: RedisConnection
) -> None:
    with MemoryStore("local") as store:
        assert store._missing_hint() == ""  # this process made it
        with StreamProducer[Any](RedisStreamPublisher(real_conn), stores={"m": store}) as producer:
            producer.send("m", {"i": 0})
            producer.close_topics("m")
        child = subprocess.run(
            [sys.executable, "-c", _FOREIGN_CONSUMER, redis_server.url, "m"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    assert child.stdout.startswith("ObjectNotFoundError"), child.stdout + child.stderr
    assert "keeps its objects in the memory of the process that made it" in child.stdout
    assert f"(process {os.getpid()})" in child.stdout

from __future__ import annotations

import copy
import pickle
import threading
from typing import Any

import pytest
from framework_plugins.memory import MemoryStore

from framework.exceptions import ProxyResolveError, UnknownStoreKindError
from framework.store import (
    Proxy,
    StoreConfig,
    StoreFactory,
    extract,
    get_factory,
    is_resolved,
    resolve,
)


class Counting:
    """A picklable factory that counts its calls."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


def test_proxy_is_transparent() -> None:
    proxy: Proxy[list[int]] = Proxy(Counting([3, 1, 2]))
    assert not is_resolved(proxy)
    assert sorted(proxy) == [1, 2, 3]
    assert isinstance(proxy, list)
    assert isinstance(proxy, Proxy)
    assert proxy.index(1) == 1
    assert is_resolved(proxy)
    assert get_factory(proxy).calls == 1  # type: ignore[attr-defined]


def test_resolve_and_extract() -> None:
    target = {"a": 1}
    proxy = Proxy(Counting(target))
    resolve(proxy)
    assert is_resolved(proxy)
    assert extract(proxy) is target
    resolve(proxy)
    assert get_factory(proxy).calls == 1  # type: ignore[attr-defined]


def test_pickle_and_copy_carry_the_factory_not_the_target() -> None:
    proxy = Proxy(Counting("x" * 10_000))
    resolve(proxy)
    data = pickle.dumps(proxy)
    assert data.count(b"x" * 10_000) == 1  # inside the pickled factory only
    clone = pickle.loads(data)
    assert not is_resolved(clone)
    assert clone == "x" * 10_000
    assert not is_resolved(copy.copy(Proxy(Counting(1))))


def test_store_factory_fetches_once_under_contention() -> None:
    with MemoryStore() as store:
        key = store.put({"big": "object"})
        factory = StoreFactory(key, store.config(), evict=True, store=store)
        barrier = threading.Barrier(8)
        results: list[Any] = []

        def touch() -> None:
            barrier.wait(timeout=10)
            results.append(factory())

        threads = [threading.Thread(target=touch, name=f"toucher-{i}") for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert len(results) == 8
        assert all(r is results[0] for r in results)
        assert not store.exists(key)


def test_store_factory_pickles_to_plain_data() -> None:
    with MemoryStore("m") as store:
        factory = StoreFactory(store.put(1), store.config(), evict=True, store=store)
        factory()
        state = factory.__getstate__()
        assert set(state) == {"key", "config", "evict"}
        assert StoreConfig(**state["config"]) == store.config()
        assert "m" in repr(factory)


def test_missing_object_error_names_key_store_and_evict() -> None:
    with MemoryStore("gone-store") as store:
        key = store.put(1)
        store.evict(key)
        proxy = store.proxy_from_key(key, evict=True)
        with pytest.raises(ProxyResolveError) as info:
            extract(proxy)
        message = str(info.value)
        assert key in message
        assert "'gone-store'" in message
        assert "evict=True" in message


def test_unknown_store_kind_surfaces_on_resolution() -> None:
    config = StoreConfig(kind="nosuchkind", name="x")
    proxy = Proxy(StoreFactory("k", config))
    with pytest.raises(ProxyResolveError, match="nosuchkind") as info:
        resolve(proxy)
    assert isinstance(info.value.cause, UnknownStoreKindError)
    assert not is_resolved(proxy)

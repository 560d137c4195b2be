"""Proxies handed to spawned processes resolve from their pickled form alone."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ProxyResolveError
from framework.store import RedisStore, get_factory, is_resolved
from framework.testing.processes import resolve_pickled_proxy

pytestmark = pytest.mark.slow

SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def pool() -> Iterator[Any]:
    with SPAWN.Pool(2) as pool:
        yield pool


def _key(proxy: Any) -> str:
    key: str = get_factory(proxy).key  # type: ignore[attr-defined]
    return key


def test_evicting_proxy_resolves_in_a_spawned_process(
    real_conn: RedisConnection, pool: Any
) -> None:
    payload = {"weights": list(range(1000)), "name": "h\u00e9llo"}
    with RedisStore("producer", connection=real_conn) as store:
        proxy = store.proxy(payload, evict=True)
        data = pickle.dumps(proxy)
        assert b"h\xc3\xa9llo" not in data  # only key and config travel
        assert (
            pool.apply(
                resolve_pickled_proxy,
                (data,),
            )
            == payload
        )
        assert not is_resolved(proxy)
        assert not store.exists(_key(proxy))  # evicted by the child's read
        with pytest.raises(ProxyResolveError, match="producer"):
            pool.apply(resolve_pickled_proxy, (data,))


def test_fan_out_proxies_resolve_in_several_processes(
    real_conn: RedisConnection, pool: Any
) -> None:
    with RedisStore("fan-out", connection=real_conn) as store:
        key = store.put(b"\x00" * 4096, readers=3)
        data = pickle.dumps(store.proxy_from_key(key))
        results = pool.map(resolve_pickled_proxy, [data] * 3)
        assert results == [b"\x00" * 4096] * 3
        assert not store.exists(key)


def test_split_object_proxy_on_the_cluster(cluster_conn: RedisConnection, pool: Any) -> None:
    with RedisStore("cluster", connection=cluster_conn, part_size=1000) as store:
        proxy = store.proxy(b"c" * 10_000, evict=True)
        assert pool.apply(resolve_pickled_proxy, (pickle.dumps(proxy),)) == b"c" * 10_000
        assert not store.exists(_key(proxy))

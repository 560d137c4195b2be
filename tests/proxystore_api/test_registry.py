"""ProxyStore's store registry (``proxystore.store``), imports changed."""

from __future__ import annotations

import pytest

from framework.connectors.redis import RedisConnector
from framework.proxy import Proxy, is_resolved
from framework.store import (
    Store,
    get_or_create_store,
    get_store,
    register_store,
    store_registration,
    unregister_store,
)
from framework.store.exceptions import ProxyStoreFactoryError, StoreExistsError
from framework.store.utils import get_key


def test_register_get_unregister(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("reg", RedisConnector(host, port)) as store:
        register_store(store)
        assert get_store("reg") is store
        unregister_store("reg")
        assert get_store("reg") is None
        register_store(store)
        unregister_store(store)
        assert get_store("reg") is None
        unregister_store("never-registered")  # a no-op, as documented


def test_a_taken_name_raises_unless_exist_ok(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with (
        Store("same", RedisConnector(host, port)) as one,
        Store("same", RedisConnector(host, port)) as two,
    ):
        register_store(one)
        try:
            with pytest.raises(StoreExistsError):
                register_store(two)
            register_store(two, exist_ok=True)
            assert get_store("same") is two
        finally:
            unregister_store("same")


def test_store_registration_context_manager(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with (
        Store("s1", RedisConnector(host, port)) as s1,
        Store("s2", RedisConnector(host, port)) as s2,
    ):
        with store_registration(s1, s2):
            assert get_store("s1") is s1
            assert get_store("s2") is s2
        assert get_store("s1") is None
        assert get_store("s2") is None
        with (
            Store("s1", RedisConnector(host, port)) as clash,
            store_registration(s1),
            pytest.raises(StoreExistsError),
            store_registration(clash),
        ):
            pass
        assert get_store("s1") is None


def test_get_store_of_a_proxy_never_resolves_it(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("by-proxy", RedisConnector(host, port), register=True) as store:
        proxy = store.proxy({"evicted": "on first use"}, evict=True, populate_target=False)
        assert get_store(proxy) is store
        assert not is_resolved(proxy)
        assert store.exists(get_key(proxy))
        with pytest.raises(ProxyStoreFactoryError):
            get_store(Proxy(lambda: 1))


def test_close_unregisters_and_get_or_create_never_returns_a_closed_store(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    store = Store("lifecycle", RedisConnector(host, port), register=True)
    config = store.config()
    assert get_or_create_store(config) is store
    store.close()
    assert get_store("lifecycle") is None
    fresh = get_or_create_store(config)
    try:
        assert fresh is not store
        assert fresh.get(fresh.put("open")) == "open"
        assert get_store("lifecycle") is fresh
    finally:
        fresh.close()
    assert get_store("lifecycle") is None

"""ProxyStore's proxy API (``proxystore.proxy``, ``proxystore.store.utils``), imports changed."""

from __future__ import annotations

import fractions
import pickle

import pytest

from framework.connectors.redis import RedisConnector
from framework.exceptions import ObjectNotFoundError
from framework.proxy import (
    Proxy,
    ProxyOr,
    ProxyResolveError,
    extract,
    get_factory,
    is_resolved,
    resolve,
)
from framework.store import Store, StoreFactory
from framework.store.exceptions import ProxyResolveMissingKeyError, ProxyStoreFactoryError
from framework.store.utils import get_key
from framework.store.utils import is_resolved as is_resolved_in_utils
from framework.stream.protocols import Filter


class Annotated:
    """The target's own docstring."""

    value: int = 3


def test_proxy_forwards_module_doc_and_annotations() -> None:
    proxy = Proxy(lambda: fractions.Fraction(1, 3))
    assert proxy.__module__ == "fractions"
    assert proxy.__doc__ == fractions.Fraction.__doc__
    annotated = Proxy(Annotated)
    assert annotated.__annotations__ == Annotated.__annotations__ == {"value": "int"}
    assert annotated.__doc__ == "The target's own docstring."
    assert isinstance(proxy, fractions.Fraction)
    assert proxy * 3 == 1


def test_proxy_of_an_iterator_supports_iter_and_next() -> None:
    proxy = Proxy(lambda: iter([1, 2, 3]))
    assert next(proxy) == 1
    assert list(iter(proxy)) == [2, 3]
    assert list(Proxy(lambda: [4, 5])) == [4, 5]


def test_a_non_callable_factory_is_refused() -> None:
    with pytest.raises(TypeError, match="callable"):
        Proxy([1, 2, 3])  # type: ignore[arg-type]


def test_resolution_helpers() -> None:
    proxy = Proxy(lambda: [1, 2])
    assert not is_resolved(proxy)
    resolve(proxy)
    assert is_resolved(proxy)
    assert extract(proxy) == [1, 2]
    assert callable(get_factory(proxy))


def test_store_factory_takes_store_config(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("factory", RedisConnector(host, port), register=True) as store:
        key = store.put({"a": 1})
        factory = StoreFactory(key, store_config=store.config(), evict=True)
        proxy = Proxy(factory)
        assert proxy == {"a": 1}
        assert get_key(proxy) == key
        assert not store.exists(key)


def test_get_key_never_resolves(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("keys", RedisConnector(host, port)) as store:
        proxy = store.proxy([1, 2, 3], evict=True, populate_target=False)
        key = get_key(proxy)
        assert store.exists(key)
        assert not is_resolved(proxy)
        with pytest.raises(ProxyStoreFactoryError):
            get_key(Proxy(lambda: 1))


def test_a_missing_object_raises_proxy_resolve_error_with_cause(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    with Store("gone", RedisConnector(host, port)) as store:
        proxy = store.proxy("value", evict=True, populate_target=False)
        store.evict(get_key(proxy))
        with pytest.raises(ProxyResolveError) as info:
            resolve(proxy)
        assert isinstance(info.value.cause, KeyError)
        assert get_key(proxy) in str(info.value)


def test_populate_target_returns_a_resolved_proxy(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("populated", RedisConnector(host, port), populate_target=True) as store:
        proxy = store.proxy([1, 2])
        assert is_resolved(proxy)
        copy = pickle.loads(pickle.dumps(proxy))
        assert not is_resolved(copy)
        assert copy == [1, 2]  # fetched through a store rebuilt from the config
        get_factory(copy).get_store().close()  # type: ignore[attr-defined]
        lazy = store.proxy([3], populate_target=False)
        assert not is_resolved(lazy)


def test_skip_nonproxiable_returns_none_and_bools(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    with Store("plain", RedisConnector(host, port)) as store:
        assert store.proxy(None, skip_nonproxiable=True) is None
        assert store.proxy(True, skip_nonproxiable=True) is True
        none, proxy, false = store.proxy_batch([None, "x", False], skip_nonproxiable=True)
        assert none is None
        assert false is False
        assert isinstance(proxy, Proxy)
        assert proxy == "x"
        assert store.proxy_batch([None], skip_nonproxiable=True) == [None]


def test_proxystore_names_for_missing_objects_factories_and_filters(
    redis_address: tuple[str, int],
) -> None:
    host, port = redis_address
    with Store("names", RedisConnector(host, port)) as store:
        assert store.metrics is None
        proxy = store.proxy([1], evict=True)
        factory = get_factory(proxy)
        assert isinstance(factory, StoreFactory)
        assert not is_resolved_in_utils(proxy)
        assert factory.resolve() == [1]  # ProxyStore's name for calling the factory
        gone = Proxy(StoreFactory(get_key(proxy), store.config(), store=store))
        with pytest.raises(ProxyResolveMissingKeyError) as caught:
            resolve(gone)
        assert isinstance(caught.value, ProxyResolveError)
        assert isinstance(caught.value.cause, ObjectNotFoundError)
    value: ProxyOr[int] = 3
    assert value == 3

    def drop_odd(metadata: dict[str, int]) -> bool:
        return metadata["i"] % 2 == 1

    keep: Filter = drop_odd
    assert keep({"i": 1})


def test_a_proxy_whose_store_was_closed_rebuilds_it(redis_address: tuple[str, int]) -> None:
    host, port = redis_address
    store = Store("closing", RedisConnector(host, port))
    proxy = store.proxy({"survives": True}, populate_target=False)
    store.close()
    try:
        assert proxy == {"survives": True}
    finally:
        rebuilt = get_factory(proxy).get_store()  # type: ignore[attr-defined]
        assert rebuilt is not store
        assert rebuilt.get(rebuilt.put("works")) == "works"
        rebuilt.close()


def test_pickled_proxies_resolve_in_another_process(redis_address: tuple[str, int]) -> None:
    import subprocess
    import sys

    host, port = redis_address
    with Store("remote", RedisConnector(host, port)) as store:
        proxy = store.proxy({"sent": [1, 2]}, evict=True)
        script = (
            "import pickle, sys; p = pickle.loads(sys.stdin.buffer.read()); "
            "print(sorted(p.items()))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=pickle.dumps(proxy),
            capture_output=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.decode().strip() == "[('sent', [1, 2])]"
        assert not store.exists(get_key(proxy))

"""The behaviour every object store must show, as a reusable pytest test class.

Subclass :class:`StoreContractTests` in a ``Test*`` class of your own test suite and
override the ``store`` fixture to yield a fresh store that uses the default
serializer; pytest then runs every contract test against it::

    import pytest
    from framework.testing import StoreContractTests

    class TestMyStore(StoreContractTests):
        @pytest.fixture
        def store(self, tmp_path):
            with MyStore("mine", root=tmp_path) as store:
                yield store

Class attributes switch off checks that cannot apply to a backend (see below).
"""

from __future__ import annotations

import functools
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from framework.exceptions import (
    ClosedError,
    ConfigurationError,
    ObjectNotFoundError,
    ProxyResolveError,
    SerializationError,
)
from framework.store import (
    MISSING,
    Store,
    StoreConfig,
    StoreFactory,
    extract,
    get_factory,
    get_or_create_store,
    is_resolved,
    register_store,
    resolve,
    unregister_store,
)

__all__ = ["StoreContractTests"]

_OBJECTS = [
    b"",
    b"\x00bytes\xff",
    "h\u00e9llo \u2192 \U0001f600",
    {"a": [1, 2.5, None, True], "b": ("t", 1)},
    0,
    list(range(1000)),
    b"L" * (3 * 1024 * 1024 + 7),
]


def _race(count: int, work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` in ``count`` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(slot: int) -> None:
        barrier.wait(timeout=10)
        try:
            results[slot] = work()
        except Exception as exc:  # noqa: BLE001 - returned to the test, which asserts on it
            results[slot] = exc

    threads = [threading.Thread(target=run, args=(i,), name=f"contract-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def _key_of(proxy: Any) -> str:
    factory = get_factory(proxy)
    assert isinstance(factory, StoreFactory)
    return factory.key


class StoreContractTests:
    """Contract tests for :class:`framework.store.Store` implementations.

    Attributes:
        rebuildable: ``Store.from_config(store.config())`` reaches the same objects.
            Set to ``False`` for stores on an injected client (e.g. fakeredis); the
            test then checks that ``from_config`` refuses with ``ConfigurationError``.
        ttl: Lifetime used by the expiry test, in seconds.
        expiry_wait: Longest wait for an expired object to disappear, in seconds.
        racers: Threads used by the concurrency tests.
    """

    rebuildable: ClassVar[bool] = True
    ttl: ClassVar[float] = 1.0
    expiry_wait: ClassVar[float] = 5.0
    racers: ClassVar[int] = 8

    @pytest.fixture
    def store(self) -> Store:
        """Override: yield a fresh store (default serializer) and close it afterwards."""
        raise NotImplementedError("Override the 'store' fixture in your test class.")

    @pytest.fixture
    def registered(self, store: Store) -> Iterator[Store]:
        """The store, registered for the duration of the test."""
        register_store(store)
        try:
            yield store
        finally:
            unregister_store(store)

    def _gone_key(self, store: Store) -> str:
        key = store.put("soon gone")
        store.evict(key)
        return key

    # -- basic objects -------------------------------------------------------------------

    def test_satisfies_the_protocol(self, store: Store) -> None:
        """The store satisfies the runtime-checkable ``Store`` protocol."""
        assert isinstance(store, Store)

    @pytest.mark.parametrize("obj", _OBJECTS, ids=lambda o: type(o).__name__)
    def test_put_get_round_trip(self, store: Store, obj: Any) -> None:
        """Objects of many types and sizes come back equal."""
        key = store.put(obj)
        assert isinstance(key, str)
        assert store.get(key) == obj

    def test_stored_none_is_not_missing(self, store: Store) -> None:
        """A stored ``None`` exists and is returned, not taken for a missing key."""
        key = store.put(None)
        assert store.exists(key)
        assert store.get(key) is None
        assert store.get(key, default="default") is None

    def test_missing_key_raises_naming_key_and_store(self, store: Store) -> None:
        """An absent key raises ``ObjectNotFoundError`` naming key and store."""
        key = self._gone_key(store)
        with pytest.raises(ObjectNotFoundError) as info:
            store.get(key)
        assert info.value.key == key
        assert info.value.store == store.name
        assert key in str(info.value)
        assert isinstance(info.value, KeyError)

    def test_missing_key_returns_default(self, store: Store) -> None:
        """An absent key returns the given default, ``None`` included."""
        key = self._gone_key(store)
        assert store.get(key, default=None) is None
        assert store.get(key, default=42) == 42

    @pytest.mark.parametrize(
        "key", ["", "nonsense", "../../etc/passwd", "fw:obj:{x}", "{}", "0" * 32 + "\n"]
    )
    def test_foreign_keys_are_missing(self, store: Store, key: str) -> None:
        """Keys the store never produced are absent: no error, no path escape."""
        assert not store.exists(key)
        assert store.get(key, default="d") == "d"
        store.evict(key)
        with pytest.raises(ObjectNotFoundError):
            store.get(key)

    def test_exists_and_evict(self, store: Store) -> None:
        """``evict`` deletes; evicting an absent key is not an error."""
        key = store.put([1])
        assert store.exists(key)
        store.evict(key)
        assert not store.exists(key)
        store.evict(key)  # evicting an absent key is not an error

    def test_get_with_evict_deletes(self, store: Store) -> None:
        """``get(evict=True)`` returns the object and deletes it."""
        key = store.put({"x": 1})
        assert store.get(key, evict=True) == {"x": 1}
        assert not store.exists(key)
        with pytest.raises(ObjectNotFoundError):
            store.get(key, evict=True)
        with pytest.raises(ObjectNotFoundError):
            store.get(key, default=MISSING)  # MISSING is "no default", not a value

    def test_unserialisable_object_raises(self, store: Store) -> None:
        """An unserializable object raises ``SerializationError`` at put."""
        with pytest.raises(SerializationError):
            store.put(threading.Lock())

    # -- batches -------------------------------------------------------------------------

    def test_batch_round_trip_keeps_order(self, store: Store) -> None:
        """Batches keep their order, hold ``None`` and may be empty."""
        objs = [{"i": i, "pad": "x" * i} for i in range(200)] + [None, b"raw"]
        keys = store.put_batch(objs)
        assert len(set(keys)) == len(objs)
        assert store.get_batch(keys) == objs
        assert store.put_batch([]) == []
        assert store.get_batch([]) == []

    def test_a_str_for_a_batch_is_refused_not_split(self, store: Store) -> None:
        """A str or bytes where a list belongs is a mistake, not items of one char each."""
        key = store.put("abc")
        for call in (store.put_batch, store.get_batch, store.evict_batch):
            with pytest.raises(TypeError, match="takes a list of"):
                call(key)
        assert store.get(key) == "abc"  # evict_batch(key) did not delete a thing

    def test_get_batch_with_missing_keys(self, store: Store) -> None:
        """Absent keys in a batch get the default, or raise without one."""
        keys = store.put_batch(["a", "b"])
        gone = self._gone_key(store)
        assert store.get_batch([keys[0], gone, keys[1]], default=None) == ["a", None, "b"]
        with pytest.raises(ObjectNotFoundError):
            store.get_batch([keys[0], gone])

    def test_get_batch_with_evict(self, store: Store) -> None:
        """A batch read with ``evict=True`` deletes every object read."""
        keys = store.put_batch([1, 2, 3])
        assert store.get_batch(keys, evict=True) == [1, 2, 3]
        assert not any(store.exists(k) for k in keys)

    # -- atomic eviction and fan-out -----------------------------------------------------

    def test_concurrent_evicting_reads_have_one_winner(self, store: Store) -> None:
        """Of concurrent evicting readers exactly one gets the object."""
        for _ in range(3):
            key = store.put(b"only once")
            results = _race(
                self.racers, functools.partial(store.get, key, default=None, evict=True)
            )
            assert [r for r in results if r is not None] == [b"only once"], results

    def test_readers_deletes_after_the_nth_read(self, store: Store) -> None:
        """A ``readers=N`` object is deleted by its N-th read."""
        key = store.put({"fan": "out"}, readers=3)
        for _ in range(3):
            assert store.exists(key)
            assert store.get(key) == {"fan": "out"}
        assert not store.exists(key)
        with pytest.raises(ObjectNotFoundError):
            store.get(key)

    def test_readers_under_concurrency(self, store: Store) -> None:
        """Concurrent readers of a ``readers=N`` object: exactly N succeed."""
        key = store.put([7], readers=3)
        results = _race(self.racers, lambda: store.get(key, default=None))
        assert results.count([7]) == 3, results
        assert results.count(None) == self.racers - 3, results
        assert not store.exists(key)

    def test_readers_in_batches(self, store: Store) -> None:
        """Batch reads count as reads of ``readers=N`` objects."""
        keys = store.put_batch(["p", "q"], readers=2)
        assert store.get_batch(keys) == ["p", "q"]
        assert store.get_batch(keys) == ["p", "q"]
        assert store.get_batch(keys, default=None) == [None, None]

    def test_evict_overrides_readers(self, store: Store) -> None:
        """An evicting read takes a ``readers=N`` object at once."""
        key = store.put("x", readers=5)
        assert store.get(key, evict=True) == "x"
        assert not store.exists(key)

    @pytest.mark.parametrize("bad", [{"ttl": 0}, {"ttl": -1.0}, {"ttl": float("nan")}])
    def test_invalid_ttl_is_refused(self, store: Store, bad: dict[str, Any]) -> None:
        """Non-positive or non-finite ttl values raise ``ConfigurationError``."""
        with pytest.raises(ConfigurationError):
            store.put(1, **bad)

    @pytest.mark.parametrize("bad", [0, -2, True, 1.5])
    def test_invalid_readers_is_refused(self, store: Store, bad: Any) -> None:
        """``readers`` must be a positive int."""
        with pytest.raises(ConfigurationError):
            store.put(1, readers=bad)

    def test_ttl_expires_objects(self, store: Store) -> None:
        """Objects with a ttl (counted ones too) expire; others stay."""
        key, kept = store.put("short", ttl=self.ttl), store.put("long")
        counted = store.put("short", ttl=self.ttl, readers=2)
        assert store.exists(key)
        deadline = time.monotonic() + self.ttl + self.expiry_wait
        while store.exists(key) or store.exists(counted):
            assert time.monotonic() < deadline, "the object outlived its ttl"
            time.sleep(0.05)
        assert store.get(key, default="expired") == "expired"
        assert store.get(counted, default="expired") == "expired"
        assert store.get(kept) == "long"

    # -- proxies -------------------------------------------------------------------------

    def test_proxy_is_lazy_and_transparent(self, store: Store) -> None:
        """A proxy resolves on first use, then behaves as its target."""
        proxy = store.proxy([1, 2, 3])
        assert not is_resolved(proxy)
        assert isinstance(get_factory(proxy), StoreFactory)
        assert len(proxy) == 3
        assert isinstance(proxy, list)
        assert is_resolved(proxy)
        assert extract(proxy) == [1, 2, 3]

    def test_evicting_proxy_deletes_on_resolution(self, store: Store) -> None:
        """An evicting proxy deletes its object when it resolves."""
        proxy = store.proxy({"k": "v"}, evict=True)
        key = _key_of(proxy)
        assert store.exists(key)
        resolve(proxy)
        assert not store.exists(key)
        assert proxy == {"k": "v"}

    def test_evicting_proxy_resolves_once_across_threads(self, store: Store) -> None:
        """Threads racing on an evicting proxy get one object."""
        proxy = store.proxy({"shared": True}, evict=True)
        results = _race(self.racers, lambda: extract(proxy))
        assert all(r is results[0] for r in results), results
        assert results[0] == {"shared": True}

    def test_proxy_pickles_as_key_and_config(self, registered: Store) -> None:
        """A pickled proxy holds key and config, never the target."""
        marker = os.urandom(32)
        proxy = registered.proxy({"payload": marker * 64}, evict=True)
        assert marker not in pickle.dumps(proxy)
        assert not is_resolved(proxy)  # pickling does not resolve
        copy = pickle.loads(pickle.dumps(proxy))  # noqa: S301 - our own bytes
        assert not is_resolved(copy)
        assert copy == {"payload": marker * 64}
        assert not registered.exists(_key_of(proxy))
        assert marker not in pickle.dumps(copy)  # nor does a resolved proxy ship its target

    def test_proxy_of_missing_object_names_key_and_store(self, store: Store) -> None:
        """A gone object's proxy raises ``ProxyResolveError`` naming both."""
        key = self._gone_key(store)
        proxy = store.proxy_from_key(key)
        with pytest.raises(ProxyResolveError) as info:
            resolve(proxy)
        assert key in str(info.value)
        assert repr(store.name) in str(info.value)
        assert isinstance(info.value.__cause__, ObjectNotFoundError)

    def test_proxy_batch_and_from_key(self, store: Store) -> None:
        """``proxy_batch`` and ``proxy_from_key`` give working proxies."""
        proxies = store.proxy_batch(["a", {"b": 2}, None])
        assert [extract(p) for p in proxies] == ["a", {"b": 2}, None]
        key = store.put(3.5)
        assert extract(store.proxy_from_key(key, evict=True)) == 3.5
        assert not store.exists(key)

    # -- config and lifecycle ------------------------------------------------------------

    def test_config_is_json_without_secrets(self, store: Store) -> None:
        """``config()`` round-trips through JSON and holds no password."""
        config = store.config()
        assert config.name == store.name
        text = config.model_dump_json()
        assert StoreConfig.from_json(text) == config
        assert "password" not in text.lower()

    def test_from_config_reaches_the_same_objects(self, store: Store) -> None:
        """A store rebuilt from ``config()`` sees the same objects."""
        if not self.rebuildable:
            with pytest.raises(ConfigurationError):
                type(store).from_config(store.config())
            return
        key = store.put({"same": "data"})
        other = type(store).from_config(store.config())
        try:
            assert other.config() == store.config()
            assert other.get(key) == {"same": "data"}
        finally:
            other.close()

    def test_registry_reuses_a_store_with_an_equal_config(self, registered: Store) -> None:
        """``get_or_create_store`` reuses a registered equal store."""
        assert get_or_create_store(registered.config()) is registered

    def test_close_is_idempotent_and_final(self, store: Store) -> None:
        """``close()`` may be repeated; a closed store refuses work."""
        with store as entered:
            assert entered is store
        store.close()
        with pytest.raises(ClosedError):
            store.put(1)
        with pytest.raises(ClosedError):
            store.get("any")

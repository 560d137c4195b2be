"""Object lifetimes (ProxyStore's ``proxystore.store.lifetimes``): evict objects together.

Pass one as ``lifetime=`` to ``put``, ``put_batch``, ``proxy``, ``proxy_batch`` or
``proxy_from_key``; the objects are evicted when the lifetime ends.

* :class:`ContextLifetime`: ends at ``close()`` (or the end of its ``with`` block).
* :class:`LeaseLifetime`: ends at an expiry time that :meth:`~LeaseLifetime.extend`
  moves. The expiry is the objects' Redis TTL (``PEXPIRE``), so the server deletes
  them at the deadline even if this process is gone; no timer thread is needed.
* :class:`StaticLifetime`: a singleton that ends when the interpreter exits.

This module does no I/O itself (the store does) and imports no Redis code.
"""

from __future__ import annotations

import atexit
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from framework.exceptions import ConfigurationError, ProxyStoreFactoryError, StoreError
from framework.proxy import Proxy, get_factory

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from framework.store.base import Store

__all__ = ["ContextLifetime", "LeaseLifetime", "Lifetime", "StaticLifetime"]


@runtime_checkable
class Lifetime(Protocol):
    """What ``lifetime=`` accepts: ProxyStore's lifetime protocol."""

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Associate the objects under ``keys`` (of ``store``) with the lifetime."""
        ...

    def add_proxy(self, *proxies: Proxy[Any]) -> None:
        """Associate the objects of store ``proxies`` with the lifetime."""
        ...

    def close(self, *, close_stores: bool = False) -> None:
        """End the lifetime and evict its objects."""
        ...

    def done(self) -> bool:
        """Whether the lifetime has ended."""
        ...


def _keys_of(proxies: tuple[Proxy[Any], ...]) -> list[str]:
    """The keys of store proxies, read from their factories (never resolving them)."""
    keys = []
    for proxy in proxies:
        factory = get_factory(proxy)
        key = getattr(factory, "key", None)
        if not isinstance(key, str) or not hasattr(factory, "store_config"):
            raise ProxyStoreFactoryError(
                f"The proxy's factory is a {type(factory).__name__}, not a StoreFactory: "
                "it names no stored object."
            )
        keys.append(key)
    return keys


class ContextLifetime:
    """A lifetime that ends when it is closed; its objects are evicted then.

    Args:
        store: The store whose objects the lifetime holds (and evicts).
        name: Name used in ``repr`` and errors; a unique id by default.
    """

    def __init__(self, store: Store, *, name: str | None = None) -> None:
        self.store = store
        self.name = name if name is not None else str(uuid.uuid4())
        self._lock = threading.Lock()
        self._keys: dict[str, Store] = {}
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, store={self.store!r})"

    def _check_open(self) -> None:
        if self.done():
            raise RuntimeError(f"Lifetime {self.name!r} has ended; it takes no more objects.")

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Associate objects with the lifetime.

        Args:
            keys: Keys of the objects.
            store: The store holding them; the lifetime's store by default.

        Raises:
            RuntimeError: If the lifetime has ended.
        """
        self._check_open()
        with self._lock:
            self._keys.update(dict.fromkeys(keys, store if store is not None else self.store))

    def add_proxy(self, *proxies: Proxy[Any]) -> None:
        """Associate the objects of store proxies with the lifetime (not resolving them).

        Raises:
            ProxyStoreFactoryError: If a proxy's factory is not a ``StoreFactory``.
            RuntimeError: If the lifetime has ended.
        """
        self.add_key(*_keys_of(proxies))

    def close(self, *, close_stores: bool = False) -> None:
        """End the lifetime and evict its objects (idempotent).

        Args:
            close_stores: Also close the stores of the objects.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            keys, self._keys = self._keys, {}
        stores = {id(s): s for s in keys.values()}
        for key, store in keys.items():
            if not store.closed:
                store.evict(key)
        if close_stores:
            for store in stores.values():
                store.close()

    def done(self) -> bool:
        """Whether the lifetime has ended."""
        return self._closed


def _deadline(expiry: datetime | timedelta | float, base: float) -> float:
    """An absolute ``time.time()`` deadline from a datetime, or a delay after ``base``."""
    if isinstance(expiry, datetime):
        return expiry.timestamp()
    if isinstance(expiry, timedelta):
        return base + expiry.total_seconds()
    if isinstance(expiry, (int, float)) and not isinstance(expiry, bool):
        return base + float(expiry)
    raise ConfigurationError(
        f"A lease expiry is a datetime, a timedelta or seconds, got {type(expiry).__name__}."
    )


class LeaseLifetime(ContextLifetime):
    """A lifetime that ends at an expiry time, which :meth:`extend` moves.

    Objects associated with the lease get the remaining lease as their TTL in the
    store, so the store (Redis) deletes them at the deadline even if this process
    dies; :meth:`extend` moves the TTL of every object. Closing the lease early evicts
    them at once.

    Args:
        store: The store whose objects the lease holds; it must be able to change the
            lifetime of stored objects (Redis stores can).
        expiry: The end of the lease: a ``datetime``, or a ``timedelta`` or number of
            seconds from now.
        name: Name used in ``repr`` and errors.

    Raises:
        StoreError: If the store cannot change the lifetime of its objects.
    """

    def __init__(
        self, store: Store, expiry: datetime | timedelta | float, *, name: str | None = None
    ) -> None:
        if not store.can_expire:
            raise StoreError(
                f"Store {store.name!r} ({type(store).__name__}) cannot change the lifetime of "
                "stored objects, which a lease needs; use a Redis store or a ContextLifetime."
            )
        super().__init__(store, name=name)
        self._expiry = _deadline(expiry, time.time())

    def remaining(self) -> float:
        """Seconds left before the lease ends (0 once it has)."""
        return max(0.0, self._expiry - time.time())

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Associate objects with the lease and give them its remaining time as TTL.

        Raises:
            RuntimeError: If the lease has ended.
        """
        super().add_key(*keys, store=store)
        (store if store is not None else self.store).expire(keys, self.remaining())

    def extend(self, expiry: datetime | timedelta | float) -> None:
        """Move the end of the lease, and the TTL of its objects.

        Args:
            expiry: A ``timedelta`` or seconds add to the current expiry; a
                ``datetime`` sets it (even if earlier than the current one).

        Raises:
            RuntimeError: If the lease has already ended.
        """
        self._check_open()
        with self._lock:
            self._expiry = _deadline(expiry, self._expiry)
            by_store: dict[int, tuple[Store, list[str]]] = {}
            for key, store in self._keys.items():
                by_store.setdefault(id(store), (store, []))[1].append(key)
        for store, keys in by_store.values():
            store.expire(keys, self.remaining())

    def done(self) -> bool:
        """Whether the lease was closed or has expired."""
        return self._closed or time.time() >= self._expiry


class StaticLifetime(ContextLifetime):
    """The lifetime of the program: its objects are evicted when the interpreter exits.

    A singleton (every ``StaticLifetime()`` is the same object), with no store of its
    own: each object is evicted from the store that holds it. At exit it evicts its
    objects and closes their stores; ``StaticLifetime().close()`` does that earlier.
    """

    _instance: StaticLifetime | None = None
    _class_lock = threading.Lock()

    def __new__(cls) -> StaticLifetime:
        """Return the one instance (created, with its exit handler, on first use)."""
        with cls._class_lock:
            if cls._instance is None:
                instance = super().__new__(cls)
                ContextLifetime.__init__(instance, None, name="static")  # type: ignore[arg-type]
                cls._instance = instance
                atexit.register(instance.close, close_stores=True)
            return cls._instance

    def __init__(self) -> None:
        """Initialized once, by ``__new__``."""

    def __repr__(self) -> str:
        return "StaticLifetime()"

    def add_key(self, *keys: str, store: Store | None = None) -> None:
        """Keep the objects of ``store`` until the program exits.

        Raises:
            ConfigurationError: If ``store`` is not given (a static lifetime has none).
            RuntimeError: If the lifetime was closed.
        """
        if store is None:
            raise ConfigurationError("StaticLifetime.add_key() needs store=: it has no store.")
        super().add_key(*keys, store=store)

    def add_proxy(self, *proxies: Proxy[Any]) -> None:
        """Keep the objects of store proxies until the program exits (not resolving them).

        Raises:
            ProxyStoreFactoryError: If a proxy's factory is not a ``StoreFactory``.
        """
        for proxy, key in zip(proxies, _keys_of(proxies), strict=True):
            self.add_key(key, store=get_factory(proxy).get_store())  # type: ignore[attr-defined]

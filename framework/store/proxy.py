"""Lazy, thread-safe, transparent proxies of stored objects.

A :class:`Proxy` behaves like the object it stands for (``isinstance``, operators,
attributes) and fetches that object from its store on first use. It is built on
``lazy-object-proxy``; what this module adds:

* **one fetch, shared by all threads**: :class:`StoreFactory` holds a lock and keeps
  the result, so two threads touching an evicting proxy get the same object from a
  single read (proxystore's factory takes no lock, so the second thread fails);
* **pickles as key plus store config**, never as the target, also after resolution,
  so a proxy can be handed to another process, which rebuilds the store through the
  registry (only registered kinds; no import path is ever read from data);
* **a clear error**: :class:`~framework.exceptions.ProxyResolveError` names the key
  and the store when the object is gone.

This module does no I/O itself and imports no Redis code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import lazy_object_proxy

from framework.exceptions import ObjectNotFoundError, ProxyResolveError
from framework.store.config import StoreConfig

if TYPE_CHECKING:
    from framework.store.protocols import Store

__all__ = ["Proxy", "StoreFactory", "extract", "get_factory", "is_resolved", "resolve"]

T = TypeVar("T")


class StoreFactory:
    """Fetches one object from a store, once, for a :class:`Proxy`.

    Calling it from several threads performs a single ``store.get``: the first caller
    fetches under a lock and the others receive the same object. Pickling keeps only
    the key, the store config and the ``evict`` flag.

    Args:
        key: Key of the object in the store.
        config: Config of the store holding it.
        evict: Delete the object from the store when it is fetched.
        store: The store instance to use in this process; when ``None`` (as after
            unpickling) the store is found or rebuilt through the registry.
    """

    def __init__(
        self, key: str, config: StoreConfig, *, evict: bool = False, store: Store | None = None
    ) -> None:
        self.key = key
        self.config = config
        self.evict = evict
        self._store = store
        self._lock = threading.Lock()
        self._done = False
        self._target: Any = None

    def __call__(self) -> Any:
        """Return the object, fetching it on the first call.

        Returns:
            The stored object (the same object on every call).

        Raises:
            ProxyResolveError: If the object is no longer in the store.
            UnknownStoreKindError: If the store's kind is not registered here.
        """
        with self._lock:
            if not self._done:
                self._target = self._fetch()
                self._done = True
            return self._target

    def _fetch(self) -> Any:
        store = self._store
        if store is None:
            # Imported here: the registry knows the store classes, which build proxies.
            from framework.store.registry import get_or_create_store

            store = self._store = get_or_create_store(self.config)
        try:
            return store.get(self.key, evict=self.evict)
        except ObjectNotFoundError as exc:
            hint = (
                " It was created with evict=True, so it resolves only once." if self.evict else ""
            )
            raise ProxyResolveError(
                f"Cannot resolve the proxy of object {self.key!r}: it is not in store "
                f"{self.config.name!r} (kind {self.config.kind!r}); it was evicted, expired or "
                f"never written.{hint}"
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        # Only what another process needs: never the target, the store or the lock.
        return {"key": self.key, "config": self.config.model_dump(mode="json"), "evict": self.evict}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.key = str(state["key"])
        self.config = StoreConfig(**state["config"])
        self.evict = bool(state["evict"])
        self._store = None
        self._lock = threading.Lock()
        self._done = False
        self._target = None

    def __repr__(self) -> str:
        return (
            f"StoreFactory(key={self.key!r}, store={self.config.name!r}, "
            f"kind={self.config.kind!r}, evict={self.evict})"
        )


class Proxy(lazy_object_proxy.Proxy, Generic[T]):  # type: ignore[misc]
    """A transparent stand-in for an object, fetched by its factory on first use.

    Almost every operation (attribute access, operators, ``isinstance``, ``str``...)
    resolves the proxy and forwards to the target. Use :func:`is_resolved`,
    :func:`extract` and :func:`resolve` to inspect it without surprises.

    Pickling a proxy never includes the target: it pickles its factory, which for
    store proxies is a :class:`StoreFactory` (key plus store config).

    Args:
        factory: Callable returning the target; called at most once per proxy
            (a :class:`StoreFactory` also guarantees it across threads).
    """

    __slots__ = ()

    def __init__(self, factory: Callable[[], T]) -> None:
        super().__init__(factory)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.__factory__,)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()


def extract(proxy: Proxy[T]) -> T:
    """Return the target of ``proxy``, resolving it if needed.

    Raises:
        ProxyResolveError: If the target cannot be fetched.
    """
    target: T = proxy.__wrapped__
    return target


def is_resolved(proxy: Proxy[Any]) -> bool:
    """Return whether ``proxy`` has fetched its target (without resolving it)."""
    return bool(proxy.__resolved__)


def resolve(proxy: Proxy[Any]) -> None:
    """Fetch the target of ``proxy`` now, if it has not been fetched yet.

    Raises:
        ProxyResolveError: If the target cannot be fetched.
    """
    proxy.__wrapped__  # noqa: B018 - touching __wrapped__ runs the factory once


def get_factory(proxy: Proxy[T]) -> Callable[[], T]:
    """Return the factory of ``proxy`` (a :class:`StoreFactory` for store proxies)."""
    factory: Callable[[], T] = proxy.__factory__
    return factory

"""``StoreFactory``: fetches one stored object, once, for a :class:`~framework.store.Proxy`.

What it adds to ProxyStore's factory of the same name and signature:

* **one fetch, shared by all threads**: it holds a lock and keeps the result, so two
  threads touching an evicting proxy get the same object from a single read
  (ProxyStore's factory takes no lock, so the second thread fails);
* **pickles as key plus store config** (and the deserializer, if one was given), never
  as the target, so a proxy can be handed to another process, which finds or rebuilds
  the store through the registry (only registered kinds; no import path is ever read
  from data);
* **a closed store is rebuilt**: a proxy whose store was closed before it resolved
  finds or rebuilds an open one from the config, as ProxyStore's does;
* **a clear error**: :class:`~framework.exceptions.ProxyResolveError` names the key and
  the store when the object is gone;
* **no pickle if told so**: a factory made with ``allow_pickle=False`` (as a stream
  consumer that refuses pickle hands out) refuses an object stored as a pickle, whatever
  the store's serializer, in this process and in any other it is pickled to.

This module does no I/O itself and imports no Redis code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from framework.exceptions import (
    ConfigurationError,
    ObjectNotFoundError,
    ProxyResolveError,
    ProxyResolveMissingKeyError,
    StoreError,
)
from framework.store.config import StoreConfig
from framework.store.registry import get_or_create_store

if TYPE_CHECKING:
    from framework.store.base import Store

__all__ = ["StoreFactory"]


class StoreFactory:
    """Fetches one object from a store, once, for a proxy.

    Args:
        key: Key of the object in the store.
        store_config: Config of the store holding it.
        evict: Delete the object from the store when it is fetched.
        deserializer: Turns the stored bytes into the object (for objects put with a
            custom ``serializer``); ``None`` uses the store's own.
        store: The store instance to use in this process while it is open; when
            ``None`` (as after unpickling) or closed, the store is found or rebuilt
            through the registry.
        allow_pickle: False refuses (``DeserializationError``) an object stored as a
            pickle, before anything is unpickled.

    Attributes:
        key: Key of the object.
        store_config: Config of the store holding it (also ``config``).
        evict: Whether fetching deletes the object.
        deserializer: The deserializer, or ``None``.
        allow_pickle: Whether an object stored as a pickle may be unpickled.
    """

    def __init__(
        self,
        key: str,
        store_config: StoreConfig,
        *,
        evict: bool = False,
        deserializer: Callable[[bytes], Any] | None = None,
        store: Store | None = None,
        allow_pickle: bool = True,
    ) -> None:
        self.key = key
        self.store_config = store_config
        self.evict = evict
        self.deserializer = deserializer
        self.allow_pickle = allow_pickle
        self._store = store
        self._lock = threading.Lock()
        self._done = False
        self._target: Any = None

    @classmethod
    def with_target(
        cls, key: str, store: Store, target: Any, *, evict: bool = False, allow_pickle: bool = True
    ) -> StoreFactory:
        """A factory of an object fetched already (by a batch read): it never fetches here.

        Pickled, it is key and store config like any other, so in another process it
        fetches the object, if it is still stored (refusing pickle if ``allow_pickle``
        is False).
        """
        factory = cls(key, store.config(), evict=evict, store=store, allow_pickle=allow_pickle)
        factory._target, factory._done = target, True
        return factory

    @property
    def config(self) -> StoreConfig:
        """The store's config (the name :attr:`store_config` had before)."""
        return self.store_config

    def __call__(self) -> Any:
        """Return the object, fetching it on the first call.

        Returns:
            The stored object (the same object on every call).

        Raises:
            ProxyResolveError: If the object is no longer in the store, or its store
                cannot be found or rebuilt here (its ``cause`` says why).
        """
        with self._lock:
            if not self._done:
                self._target = self._fetch()
                self._done = True
            return self._target

    def resolve(self) -> Any:
        """Same as calling the factory (ProxyStore's name)."""
        return self()

    def get_store(self) -> Store:
        """Return an open store holding the object: the one given, else a registered or new one.

        Raises:
            UnknownStoreKindError: If the store's kind is not registered here.
            ConfigurationError: If the store cannot be rebuilt from its config.
        """
        store = self._store
        if store is None or getattr(store, "closed", False):
            store = self._store = get_or_create_store(self.store_config)
        return store

    def _fetch(self) -> Any:
        config = self.store_config
        try:
            store = self.get_store()
        except (StoreError, ConfigurationError) as exc:
            raise ProxyResolveError(
                f"Cannot resolve the proxy of object {self.key!r}: store {config.name!r} "
                f"(kind {config.kind!r}) cannot be found or rebuilt here: {exc}",
                exc,
            ) from exc
        options: dict[str, Any] = {"evict": self.evict}
        if self.deserializer is not None:
            options["deserializer"] = self.deserializer
        if not self.allow_pickle:  # only then: a get() override without it fails, never unpickles
            options["allow_pickle"] = False
        try:
            return store.get(self.key, **options)
        except ObjectNotFoundError as exc:
            hint = (
                " It was created with evict=True, so it resolves only once." if self.evict else ""
            )
            raise ProxyResolveMissingKeyError(
                f"Cannot resolve the proxy of object {self.key!r}: it is not in store "
                f"{config.name!r} (kind {config.kind!r}); it was evicted, expired or never "
                f"written.{hint}",
                exc,
            ) from exc

    def __getstate__(self) -> dict[str, Any]:
        # Only what another process needs: never the target, the store or the lock.
        state = {
            "key": self.key,
            "config": self.store_config.model_dump(mode="json"),
            "evict": self.evict,
        }
        if self.deserializer is not None:
            state["deserializer"] = self.deserializer
        if not self.allow_pickle:  # the refusal travels with the proxy
            state["allow_pickle"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.key = str(state["key"])
        self.store_config = StoreConfig(**state["config"])
        self.evict = bool(state["evict"])
        self.deserializer = state.get("deserializer")
        self.allow_pickle = bool(state.get("allow_pickle", True))
        self._store = None
        self._lock = threading.Lock()
        self._done = False
        self._target = None

    def __repr__(self) -> str:
        return (
            f"StoreFactory(key={self.key!r}, store={self.store_config.name!r}, "
            f"kind={self.store_config.kind!r}, evict={self.evict})"
        )

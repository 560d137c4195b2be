"""Store kinds and store instances known to this process.

**Kinds** map a :attr:`StoreConfig.kind` to a class: kinds added with
:func:`register_store_kind` (the built-in ``redis`` kind registers itself so, when
:mod:`framework.store.redis` is imported, as the package does) and the entry points of
the ``framework.stores`` group (``memory`` and ``file`` ship in ``plugins/``). A config
read from Redis can only ever instantiate one of those classes; no import path is
taken from data (proxystore imports whatever path an event names).

**Instances** are registered by name, as ProxyStore's are: :func:`register_store`
refuses a second store under a taken name (:class:`StoreExistsError`) unless
``exist_ok``, :func:`store_registration` registers for a ``with`` block, and a store's
``close()`` unregisters it. :func:`get_or_create_store` reuses a registered open store
only when its *whole* config equals the requested one: a local store that merely
shares the name (say, another Redis server) is never used by mistake.

This module imports no store class and no Redis code.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from framework.exceptions import (
    ProxyStoreFactoryError,
    StoreError,
    StoreExistsError,
    UnknownStoreKindError,
)
from framework.proxy import get_factory, is_proxy
from framework.store.config import StoreConfig

if TYPE_CHECKING:
    # Typing only: the store classes import this module (never the other way round).
    from framework.store.base import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "get_or_create_store",
    "get_store",
    "register_store",
    "register_store_kind",
    "registered_stores",
    "store_kind",
    "store_kinds",
    "store_registration",
    "unregister_store",
    "unregister_store_kind",
]

logger = logging.getLogger(__name__)

#: Entry-point group that plugins use to add store kinds.
ENTRY_POINT_GROUP = "framework.stores"

_lock = threading.RLock()
_by_name: dict[str, Store] = {}
# Stores made by get_or_create_store whose name was taken by a store with another config.
_shadowed: list[Store] = []
_kinds: dict[str, type[Any]] = {}


def store_kind(kind: str) -> type[Any] | None:
    """Return the class registered for ``kind`` (loading only that entry point), or ``None``.

    Raises:
        StoreError: If the entry point does not name a store class.
    """
    with _lock:
        if kind in _kinds:
            return _kinds[kind]
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == kind:
            return _checked_kind(kind, point.load())
    return None


def _checked_kind(kind: str, cls: Any) -> type[Any]:
    if not isinstance(cls, type) or not callable(getattr(cls, "from_config", None)):
        raise StoreError(f"Store kind {kind!r} does not name a class with a from_config() method.")
    return cls


def store_kinds() -> dict[str, type[Any]]:
    """Return every store kind this process can build, by kind name.

    Returns:
        Entry-point kinds and kinds added with :func:`register_store_kind` (the
        built-in ``redis`` among them; they take precedence), loading the entry points.

    Raises:
        StoreError: If an entry point does not name a store class.
    """
    kinds: dict[str, type[Any]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        kinds.setdefault(point.name, _checked_kind(point.name, point.load()))
    with _lock:
        kinds.update(_kinds)
    return kinds


def register_store_kind(kind: str, cls: type[Any], *, exist_ok: bool = False) -> None:
    """Add a store kind in this process (an alternative to an entry point, e.g. in tests).

    Args:
        kind: Kind name, as it appears in :attr:`StoreConfig.kind`.
        cls: Store class with a ``from_config`` classmethod.
        exist_ok: Replace a kind added earlier under the same name.

    Raises:
        StoreError: If ``kind`` was already added and ``exist_ok`` is false, or ``cls``
            has no ``from_config``.
    """
    _checked_kind(kind, cls)
    with _lock:
        if kind in _kinds and _kinds[kind] is not cls and not exist_ok:
            raise StoreError(f"Store kind {kind!r} is already registered as {_kinds[kind]!r}.")
        _kinds[kind] = cls


def unregister_store_kind(kind: str) -> None:
    """Remove a kind added with :func:`register_store_kind`; unknown kinds are ignored."""
    with _lock:
        _kinds.pop(kind, None)


def register_store(store: Store, exist_ok: bool = False) -> None:
    """Register ``store`` under its name, for :func:`get_store` and proxy resolution.

    Registering the same instance again does nothing.

    Args:
        store: The store.
        exist_ok: Replace another store registered under the same name.

    Raises:
        StoreExistsError: If another store has that name and ``exist_ok`` is false.
    """
    with _lock:
        current = _by_name.get(store.name)
        if current is not None and current is not store and not exist_ok:
            raise StoreExistsError(
                f"A store named {store.name!r} is already registered; use get_store(name), "
                "unregister it first, or pass exist_ok=True."
            )
        _by_name[store.name] = store


@contextlib.contextmanager
def store_registration(*stores: Store, exist_ok: bool = False) -> Iterator[None]:
    """Register ``stores`` for the ``with`` block, then unregister them (not closing them).

    Args:
        stores: The stores.
        exist_ok: Replace other stores registered under the same names.

    Raises:
        StoreExistsError: If a name is taken by another store and ``exist_ok`` is false
            (stores registered by this call before the error are unregistered again).
    """
    done: list[Store] = []
    try:
        for store in stores:
            register_store(store, exist_ok=exist_ok)
            done.append(store)
        yield
    finally:
        for store in done:
            unregister_store(store)


def unregister_store(name_or_store: str | Store) -> None:
    """Forget a registered store (by name or instance); it is not closed.

    Args:
        name_or_store: The store's name or the store itself. Unknown ones are ignored.
    """
    with _lock:
        if isinstance(name_or_store, str):
            _by_name.pop(name_or_store, None)
            return
        if _by_name.get(name_or_store.name) is name_or_store:
            del _by_name[name_or_store.name]
        _shadowed[:] = [s for s in _shadowed if s is not name_or_store]


def get_store(val: str | Any) -> Store | None:
    """Return the store registered under a name, or the store of a proxy.

    Args:
        val: A store name, or a proxy (which is never resolved by this call).

    Returns:
        The store registered under the name, ``None`` if there is none. For a proxy:
        the open store holding its object (found or rebuilt from the proxy's config).

    Raises:
        ProxyStoreFactoryError: If ``val`` is a proxy whose factory is not a store factory.
    """
    if is_proxy(val):  # checked on the type: isinstance() would resolve the proxy
        factory = get_factory(val)  # type: ignore[arg-type]
        get = getattr(factory, "get_store", None)
        if not callable(get) or not hasattr(factory, "store_config"):
            raise ProxyStoreFactoryError(
                f"The proxy's factory is a {type(factory).__name__}, not a StoreFactory: "
                "it belongs to no store."
            )
        found: Store = get()
        return found
    with _lock:
        return _by_name.get(val)


def registered_stores() -> list[Store]:
    """Return every registered store, including same-name stores of other configs."""
    with _lock:
        return [*_by_name.values(), *_shadowed]


def get_or_create_store(store_config: StoreConfig, *, register: bool = True) -> Store:
    """Return a registered store whose config equals ``store_config``, else build one.

    Only a store with an *equal* config is reused. A new store is built by the class
    registered for ``store_config.kind``; credentials are not in configs, so each kind
    takes them from this process (for Redis: ``FRAMEWORK_REDIS_URL``).

    Args:
        store_config: Config of the wanted store, e.g. from an event or a proxy
            (ProxyStore's parameter name).
        register: Register a newly built store so later calls reuse it. When the name
            is taken by a store with another config, the new one is kept aside (see
            :func:`registered_stores`) instead of replacing it.

    Returns:
        The store.

    Raises:
        UnknownStoreKindError: If ``store_config.kind`` is not a registered kind.
        ConfigurationError: If the store cannot be built from ``store_config``.
    """
    config = store_config
    with _lock:
        for known in registered_stores():
            if getattr(known, "closed", False):
                continue  # a closed store still registered (closed outside close()) is no use
            if known.name == config.name and known.config() == config:
                return known
        cls = store_kind(config.kind)
        if cls is None:
            raise UnknownStoreKindError(
                f"Store {config.name!r} has kind {config.kind!r}, which is not registered in this "
                f"process; known kinds: {', '.join(sorted(store_kinds()))}. Install the plugin "
                "that provides it (entry-point group 'framework.stores')."
            )
        store: Store = cls.from_config(config)
        if register:
            _remember(store)
        return store


def _remember(store: Store) -> None:
    """Register a store built from a config, beside a same-name store if there is one."""
    current = _by_name.get(store.name)
    if current is not None and not getattr(current, "closed", False):
        logger.warning(
            "Store name %r is registered with another config; keeping the new store apart.",
            store.name,
        )
        _shadowed.append(store)
    else:
        _by_name[store.name] = store

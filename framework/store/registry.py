"""Store kinds and store instances known to this process.

**Kinds** map a :attr:`StoreConfig.kind` to a class: the built-in ``redis`` kind, the
entry points of the ``framework.stores`` group (``memory`` and ``file`` ship in
``plugins/``) and kinds added with :func:`register_store_kind`. A config read from
Redis can only ever instantiate one of those classes; no import path is taken from
data (proxystore imports whatever path an event names).

**Instances** are registered by name. :func:`get_or_create_store` reuses a registered
store only when its *whole* config equals the requested one: a local store that merely
shares the name (say, another Redis server) is never used by mistake.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Any

from framework.exceptions import StoreError, UnknownStoreKindError
from framework.store.config import StoreConfig
from framework.store.protocols import Store

__all__ = [
    "ENTRY_POINT_GROUP",
    "get_or_create_store",
    "get_store",
    "register_store",
    "register_store_kind",
    "registered_stores",
    "store_kinds",
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


def _builtin_kinds() -> dict[str, type[Any]]:
    # Imported here: the Redis store module imports this package's other modules.
    from framework.store.redis import RedisStore

    return {"redis": RedisStore}


def _load_kind(kind: str) -> type[Any] | None:
    """Find ``kind`` among added, built-in and entry-point kinds (loading only that one)."""
    with _lock:
        if kind in _kinds:
            return _kinds[kind]
    builtin = _builtin_kinds().get(kind)
    if builtin is not None:
        return builtin
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
        Built-in kinds, entry-point kinds and kinds added with
        :func:`register_store_kind` (which take precedence), loading the entry points.

    Raises:
        StoreError: If an entry point does not name a store class.
    """
    kinds = _builtin_kinds()
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


def register_store(store: Store, *, exist_ok: bool = False) -> None:
    """Register ``store`` under its name, for :func:`get_store` and proxy resolution.

    Args:
        store: The store.
        exist_ok: Replace another store registered under the same name.

    Raises:
        StoreError: If another store has that name and ``exist_ok`` is false.
    """
    with _lock:
        current = _by_name.get(store.name)
        if current is not None and current is not store and not exist_ok:
            raise StoreError(
                f"A store named {store.name!r} is already registered; "
                "unregister it first or pass exist_ok=True."
            )
        _by_name[store.name] = store


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


def get_store(name: str) -> Store | None:
    """Return the store registered under ``name``, or ``None``."""
    with _lock:
        return _by_name.get(name)


def registered_stores() -> list[Store]:
    """Return every registered store, including same-name stores of other configs."""
    with _lock:
        return [*_by_name.values(), *_shadowed]


def get_or_create_store(config: StoreConfig, *, register: bool = True) -> Store:
    """Return a registered store whose config equals ``config``, else build one.

    Only a store with an *equal* config is reused. A new store is built by the class
    registered for ``config.kind``; credentials are not in configs, so each kind
    takes them from this process (for Redis: ``FRAMEWORK_REDIS_URL``).

    Args:
        config: Config of the wanted store, e.g. from an event or a proxy.
        register: Register a newly built store so later calls reuse it. When the name
            is taken by a store with another config, the new one is kept aside (see
            :func:`registered_stores`) instead of replacing it.

    Returns:
        The store.

    Raises:
        UnknownStoreKindError: If ``config.kind`` is not a registered kind.
    """
    with _lock:
        for known in registered_stores():
            if known.name == config.name and known.config() == config:
                return known
        cls = _load_kind(config.kind)
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
    if store.name in _by_name:
        logger.warning(
            "Store name %r is registered with another config; keeping the new store apart.",
            store.name,
        )
        _shadowed.append(store)
    else:
        _by_name[store.name] = store

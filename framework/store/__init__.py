"""Object stores: put objects in Redis (or a plugin backend), get them back by key or proxy.

ProxyStore's ``proxystore.store`` API: ``Store(name, RedisConnector(host, port))``,
``register_store``/``get_store``/``unregister_store``/``store_registration``,
``StoreFactory``, lifetimes (:mod:`framework.store.lifetimes`) and ``get_key``
(:mod:`framework.store.utils`).

Example:
    ```python
    from framework.connection import RedisConnection
    from framework.store import RedisStore, extract

    conn = RedisConnection.from_url("redis://127.0.0.1:6379")
    with conn, RedisStore(connection=conn) as store:
        key = store.put({"weights": [1, 2, 3]}, ttl=600)
        assert store.get(key) == {"weights": [1, 2, 3]}
        proxy = store.proxy([1, 2, 3], evict=True)   # pickles as key + store config
        assert extract(proxy) == [1, 2, 3]           # fetched (and evicted) on first use
    ```
"""

from __future__ import annotations

from framework.proxy import Proxy, extract, get_factory, is_proxy, is_resolved, resolve
from framework.store.base import SECRET_ENV_VAR, BaseStore, Store
from framework.store.config import StoreConfig
from framework.store.connector import RedisConnector
from framework.store.factory import StoreFactory
from framework.store.layout import MAX_VALUE_BYTES, PART_BYTES, Encoded
from framework.store.lifetimes import ContextLifetime, LeaseLifetime, Lifetime, StaticLifetime
from framework.store.protocols import (
    MISSING,
    Deserializer,
    Serializer,
    StagingStore,
    StoreProtocol,
)
from framework.store.redis import RedisStore, StagedBatch
from framework.store.registry import (
    get_or_create_store,
    get_store,
    register_store,
    register_store_kind,
    registered_stores,
    store_kind,
    store_kinds,
    store_registration,
    unregister_store,
    unregister_store_kind,
)
from framework.store.utils import get_key

__all__ = [
    "MAX_VALUE_BYTES",
    "MISSING",
    "PART_BYTES",
    "SECRET_ENV_VAR",
    "BaseStore",
    "ContextLifetime",
    "Deserializer",
    "Encoded",
    "LeaseLifetime",
    "Lifetime",
    "Proxy",
    "RedisConnector",
    "RedisStore",
    "Serializer",
    "StagedBatch",
    "StagingStore",
    "StaticLifetime",
    "Store",
    "StoreConfig",
    "StoreFactory",
    "StoreProtocol",
    "extract",
    "get_factory",
    "get_key",
    "get_or_create_store",
    "get_store",
    "is_proxy",
    "is_resolved",
    "register_store",
    "register_store_kind",
    "registered_stores",
    "resolve",
    "store_kind",
    "store_kinds",
    "store_registration",
    "unregister_store",
    "unregister_store_kind",
]

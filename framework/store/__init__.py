"""Object stores: put objects in Redis (or a plugin backend), get them back by key or proxy.

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

from framework.store.base import SECRET_ENV_VAR, BaseStore
from framework.store.config import StoreConfig
from framework.store.layout import MAX_VALUE_BYTES, PART_BYTES
from framework.store.protocols import MISSING, StagingStore, Store
from framework.store.proxy import Proxy, StoreFactory, extract, get_factory, is_resolved, resolve
from framework.store.redis import RedisStore, StagedBatch
from framework.store.registry import (
    get_or_create_store,
    get_store,
    register_store,
    register_store_kind,
    registered_stores,
    store_kinds,
    unregister_store,
    unregister_store_kind,
)

__all__ = [
    "MAX_VALUE_BYTES",
    "MISSING",
    "PART_BYTES",
    "SECRET_ENV_VAR",
    "BaseStore",
    "Proxy",
    "RedisStore",
    "StagedBatch",
    "StagingStore",
    "Store",
    "StoreConfig",
    "StoreFactory",
    "extract",
    "get_factory",
    "get_or_create_store",
    "get_store",
    "is_resolved",
    "register_store",
    "register_store_kind",
    "registered_stores",
    "resolve",
    "store_kinds",
    "unregister_store",
    "unregister_store_kind",
]

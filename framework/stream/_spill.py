"""The default spill store: a Redis store on the publisher's own connection.

Kept apart from the producer so that the producer's logic does not depend on
Redis: only this function knows that a publisher may expose a ``connection``.
"""

from __future__ import annotations

from typing import Any

from framework.connection import RedisConnection
from framework.store import RedisStore, Store, get_store, register_store

__all__ = ["SPILL_STORE_NAME", "default_spill_store"]

#: Name of the automatic spill store (the registry tells stores of other servers apart).
SPILL_STORE_NAME = "fw-spill"


def default_spill_store(publisher: Any, ttl: float, secret: bytes | None) -> Store | None:
    """Return a Redis store on ``publisher.connection``, or ``None`` if it has none.

    Args:
        publisher: Any publisher; Redis publishers expose their ``connection``.
        ttl: Lifetime (s) of spilled objects, so unconsumed ones expire.
        secret: The producer's HMAC key: spilled objects are signed like its messages,
            so a consumer with the secret never reads an unsigned spilled object.

    Returns:
        A store that does not own (or close) the publisher's connection; registered
        under ``fw-spill`` when that name is free (the producer unregisters it).
    """
    connection = getattr(publisher, "connection", None)
    if not isinstance(connection, RedisConnection):
        return None
    store = RedisStore(SPILL_STORE_NAME, connection=connection, ttl=ttl, secret=secret)
    if get_store(SPILL_STORE_NAME) is None:
        # Consumers in this process then find it by its config, also when the connection
        # is an injected client that no config can rebuild (fakeredis in tests).
        register_store(store)
    return store

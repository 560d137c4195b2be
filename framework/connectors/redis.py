"""ProxyStore's ``proxystore.connectors.redis``: :class:`RedisConnector`."""

from __future__ import annotations

from framework.store.connector import RedisConnector

__all__ = ["RedisConnector"]

"""ProxyStore's ``proxystore.connectors`` names: where a ``Store`` keeps its objects.

Only :mod:`framework.connectors.redis` exists; a connector here only names a backend
for ``Store(name, connector)``, the store class does the I/O.
"""

from __future__ import annotations

from framework.store.connector import RedisConnector

__all__ = ["RedisConnector"]

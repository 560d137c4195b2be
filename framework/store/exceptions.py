"""The store's exceptions under ProxyStore's module name (``proxystore.store.exceptions``).

They are defined in :mod:`framework.exceptions`. A proxy of a missing object raises
:class:`~framework.exceptions.ProxyResolveMissingKeyError` (a ``ProxyResolveError``),
whose ``cause`` is the :class:`~framework.exceptions.ObjectNotFoundError`.
"""

from __future__ import annotations

from framework.exceptions import (
    ObjectNotFoundError,
    ProxyResolveError,
    ProxyResolveMissingKeyError,
    ProxyStoreFactoryError,
    StoreError,
    StoreExistsError,
)

__all__ = [
    "ObjectNotFoundError",
    "ProxyResolveError",
    "ProxyResolveMissingKeyError",
    "ProxyStoreFactoryError",
    "StoreError",
    "StoreExistsError",
]

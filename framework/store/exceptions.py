"""The store's exceptions under ProxyStore's module name (``proxystore.store.exceptions``).

They are defined in :mod:`framework.exceptions`; ProxyStore's
``ProxyResolveMissingKeyError`` is :class:`~framework.exceptions.ObjectNotFoundError`
here (the ``cause`` of the :class:`~framework.exceptions.ProxyResolveError` a proxy
of a missing object raises).
"""

from __future__ import annotations

from framework.exceptions import (
    ObjectNotFoundError,
    ProxyResolveError,
    ProxyStoreFactoryError,
    StoreError,
    StoreExistsError,
)

__all__ = [
    "ObjectNotFoundError",
    "ProxyResolveError",
    "ProxyStoreFactoryError",
    "StoreError",
    "StoreExistsError",
]

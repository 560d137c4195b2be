"""Store helpers for proxies (ProxyStore's ``proxystore.store.utils``)."""

from __future__ import annotations

from typing import Any

from framework.exceptions import ProxyStoreFactoryError
from framework.proxy import Proxy, get_factory, is_resolved
from framework.store.factory import StoreFactory

# is_resolved is re-exported where ProxyStore has it too.
__all__ = ["get_key", "is_resolved"]


def get_key(proxy: Proxy[Any]) -> str:
    """Return the key of the stored object behind ``proxy``, without resolving it.

    Args:
        proxy: A proxy made by a store (``store.proxy(...)``, a stream consumer...).

    Returns:
        The object's key in its store.

    Raises:
        ProxyStoreFactoryError: If the proxy's factory is not a :class:`StoreFactory`.
    """
    factory = get_factory(proxy)
    if not isinstance(factory, StoreFactory):
        raise ProxyStoreFactoryError(
            f"The proxy's factory is a {type(factory).__name__}, not a StoreFactory: "
            "it names no stored object."
        )
    return factory.key

"""The proxy-making methods of :class:`~framework.store.Store` (a mixin; pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from framework.exceptions import ConfigurationError
from framework.proxy import Proxy
from framework.store.factory import StoreFactory

if TYPE_CHECKING:
    from framework.store.base import Store
    from framework.store.config import StoreConfig
    from framework.store.lifetimes import Lifetime
    from framework.store.protocols import Deserializer, Serializer

__all__ = ["ProxyMethods"]

_NOT_PROXIED = (bool, type(None))  # ProxyStore's non-proxiable types


class ProxyMethods:
    """``proxy``, ``proxy_batch`` and ``proxy_from_key`` over a store's ``put_batch``."""

    populate_target: bool

    if TYPE_CHECKING:  # provided by the store this mixin is part of

        def put_batch(
            self,
            objs: Sequence[Any],
            *,
            ttl: float | None = None,
            readers: int | None = None,
            lifetime: Lifetime | None = None,
            serializer: Serializer | None = None,
        ) -> list[str]: ...

        def config(self) -> StoreConfig: ...

    def proxy(
        self,
        obj: Any,
        *,
        evict: bool = False,
        ttl: float | None = None,
        lifetime: Lifetime | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        skip_nonproxiable: bool = False,
    ) -> Proxy[Any]:
        """Store ``obj`` and return a lazy proxy of it (see :meth:`proxy_batch`).

        With ``skip_nonproxiable``, ``None`` and booleans are returned as they are
        (ProxyStore cannot proxy them; this store can, so it does so by default).
        """
        return self.proxy_batch(
            [obj],
            evict=evict,
            ttl=ttl,
            lifetime=lifetime,
            serializer=serializer,
            deserializer=deserializer,
            populate_target=populate_target,
            skip_nonproxiable=skip_nonproxiable,
        )[0]

    def proxy_batch(
        self,
        objs: Sequence[Any],
        *,
        evict: bool = False,
        ttl: float | None = None,
        lifetime: Lifetime | None = None,
        serializer: Serializer | None = None,
        deserializer: Deserializer | None = None,
        populate_target: bool | None = None,
        skip_nonproxiable: bool = False,
    ) -> list[Proxy[Any]]:
        """Store several objects in one round trip and return a lazy proxy of each.

        Args:
            objs: The objects.
            evict: Delete an object from the store when its proxy resolves (then only
                one proxy, in one process, can ever resolve it). Not with ``lifetime``.
            ttl: Lifetime in seconds; ``None`` uses the store's default.
            lifetime: Evict the objects when this lifetime ends. Not with ``evict``.
            serializer: Custom serializer function for these objects.
            deserializer: Custom deserializer function the proxies resolve with.
            populate_target: Return proxies that already hold their objects (copies
                made by pickling still fetch them); ``None`` uses the store's default.
            skip_nonproxiable: Return ``None`` and booleans as they are, in their places
                (ProxyStore cannot proxy them), and store only the other objects.

        Returns:
            Proxies that fetch their objects on first use; they pickle as key plus config.

        Raises:
            ConfigurationError: If both ``evict`` and ``lifetime`` are given (a ``ValueError``).
        """
        if evict and lifetime is not None:
            raise ConfigurationError("evict and lifetime are mutually exclusive: give only one.")
        skipped = [skip_nonproxiable and isinstance(obj, _NOT_PROXIED) for obj in objs]
        stored = [obj for obj, skip in zip(objs, skipped, strict=True) if not skip]
        keys = iter(self.put_batch(stored, ttl=ttl, lifetime=lifetime, serializer=serializer))
        populate = self.populate_target if populate_target is None else populate_target
        proxies: list[Proxy[Any]] = []
        for obj, skip in zip(objs, skipped, strict=True):
            if skip:  # ProxyStore's overloads type it the same way
                proxies.append(cast("Proxy[Any]", obj))
                continue
            factory = self._factory(next(keys), evict, deserializer)
            proxies.append(Proxy(factory, target=obj) if populate else Proxy(factory))
        return proxies

    def proxy_from_key(
        self,
        key: str,
        *,
        evict: bool = False,
        lifetime: Lifetime | None = None,
        deserializer: Deserializer | None = None,
    ) -> Proxy[Any]:
        """Return a lazy proxy of the object already stored under ``key``.

        Args:
            key: Key of the object.
            evict: Delete the object from the store when the proxy resolves.
            lifetime: Evict the object when this lifetime ends. Not with ``evict``.
            deserializer: Custom deserializer function the proxy resolves with.

        Returns:
            The proxy; a missing object surfaces as ``ProxyResolveError`` on first use.
        """
        if evict and lifetime is not None:
            raise ConfigurationError("evict and lifetime are mutually exclusive: give only one.")
        if lifetime is not None:
            lifetime.add_key(key, store=cast("Store", self))
        return Proxy(self._factory(key, evict, deserializer))

    def _factory(self, key: str, evict: bool, deserializer: Deserializer | None) -> StoreFactory:
        store = cast("Store", self)
        return StoreFactory(key, self.config(), evict=evict, deserializer=deserializer, store=store)

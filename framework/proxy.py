"""Lazy, transparent proxies (ProxyStore's ``proxystore.proxy``): resolved on first use.

A :class:`Proxy` behaves like the object it stands for (``isinstance``, operators,
attributes, iteration, ``__module__``, ``__doc__``, ``__annotations__``) and calls its
factory on first use. It is built on ``lazy-object-proxy`` and pickles as its factory,
never as its target. This module knows no store: store proxies get their factory,
:class:`framework.store.StoreFactory`, from :mod:`framework.store.factory`; a
factory's failure surfaces as whatever it raises (a ``StoreFactory`` raises
:class:`~framework.exceptions.ProxyResolveError`, re-exported here).

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, Union

import lazy_object_proxy

from framework.exceptions import ProxyResolveError

__all__ = [
    "Proxy",
    "ProxyOr",
    "ProxyResolveError",
    "extract",
    "get_factory",
    "is_proxy",
    "is_resolved",
    "resolve",
]

T = TypeVar("T")

_MISSING: Any = object()


def _forwarded(name: str) -> property:
    """A property reading ``name`` from the target (resolving the proxy)."""

    def get(self: Any) -> Any:
        return getattr(self.__wrapped__, name)

    return property(get)


class _ProxyType(type):
    """Puts the target-forwarding properties into every proxy class.

    A class body always defines ``__module__`` and ``__doc__`` (and may define
    ``__annotations__``); those plain class attributes would shadow the forwarding
    properties of a base class, so the properties are written into each class.
    """

    def __new__(mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> Any:
        for attribute in ("__module__", "__doc__", "__annotations__"):
            namespace[attribute] = _forwarded(attribute)
        return super().__new__(mcs, name, bases, namespace)


class Proxy(lazy_object_proxy.Proxy, Generic[T], metaclass=_ProxyType):  # type: ignore[misc]
    """A transparent stand-in for an object, fetched by its factory on first use.

    Almost every operation (attribute access, operators, ``isinstance``, ``str``,
    ``iter``/``next``...) resolves the proxy and forwards to the target. Use
    :func:`is_resolved`, :func:`extract` and :func:`resolve` to inspect it without
    surprises. Pickling a proxy pickles its factory, never the target.

    Args:
        factory: Callable returning the target; called at most once per proxy
            (a :class:`~framework.store.StoreFactory` also guarantees it across threads).
        target: The target itself, when it is at hand: the proxy is then resolved
            from the start (ProxyStore's ``populate_target``) and the factory is only
            called by copies made by pickling.

    Raises:
        TypeError: If ``factory`` is not callable.
    """

    __slots__ = ()

    def __init__(self, factory: Callable[[], T], *, target: Any = _MISSING) -> None:
        if not callable(factory):
            raise TypeError(f"A proxy's factory must be callable, got {type(factory).__name__}.")
        super().__init__(factory)
        if target is not _MISSING:
            lazy_object_proxy.Proxy.__setattr__(self, "__wrapped__", target)

    def __next__(self) -> Any:
        return next(self.__wrapped__)

    def __reduce__(self) -> tuple[Any, ...]:
        # A module-level function, not the class: the class's __module__ is a property.
        return _rebuild, (self.__factory__,)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        return self.__reduce__()


def _rebuild(factory: Callable[[], Any]) -> Proxy[Any]:
    """Unpickle a proxy: a new, unresolved proxy of the same factory."""
    return Proxy(factory)


#: A proxy of a ``T`` or a ``T`` itself (ProxyStore's ``ProxyOr``).
ProxyOr = Union[Proxy[T], T]


def extract(proxy: Proxy[T]) -> T:
    """Return the target of ``proxy``, resolving it if needed.

    Raises:
        ProxyResolveError: If the target cannot be fetched.
    """
    target: T = proxy.__wrapped__
    return target


def is_resolved(proxy: Proxy[Any]) -> bool:
    """Return whether ``proxy`` has its target (without resolving it)."""
    return bool(proxy.__resolved__)


def resolve(proxy: Proxy[Any]) -> None:
    """Fetch the target of ``proxy`` now, if it has not been fetched yet.

    Raises:
        ProxyResolveError: If the target cannot be fetched.
    """
    proxy.__wrapped__  # noqa: B018 - touching __wrapped__ runs the factory once


def get_factory(proxy: Proxy[T]) -> Callable[[], T]:
    """Return the factory of ``proxy`` (a ``StoreFactory`` for store proxies)."""
    factory: Callable[[], T] = proxy.__factory__
    return factory


def is_proxy(obj: object) -> bool:
    """Return whether ``obj`` is a proxy, without resolving it."""
    return issubclass(type(obj), lazy_object_proxy.Proxy)  # type() never resolves a proxy

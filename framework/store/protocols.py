"""The ``StoreProtocol`` every object store satisfies, and the ``MISSING`` sentinel.

Backends satisfy :class:`StoreProtocol` structurally; :class:`framework.store.Store`
(also named ``BaseStore``) is the base class of the built-in stores, which implements
everything but the byte-level storage. This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from framework.proxy import Proxy
    from framework.store.config import StoreConfig
    from framework.store.layout import StagedBatch

__all__ = ["MISSING", "Deserializer", "Serializer", "StagingStore", "StoreProtocol"]

#: A custom serializer (ProxyStore's ``SerializerT``): object to bytes.
Serializer = Callable[[Any], bytes]
#: A custom deserializer (ProxyStore's ``DeserializerT``): bytes to object.
Deserializer = Callable[[bytes], Any]


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


#: "No default given": ``get(key)`` then raises instead of returning a default, so that
#: ``None`` can be a real default (and a real stored value).
MISSING: Final = _Missing.MISSING


@runtime_checkable
class StoreProtocol(Protocol):
    """A named place to put objects and get them back by key, from any process.

    Keys are strings produced by :meth:`put`; they are only meaningful to the store
    (or an equal store rebuilt from :meth:`config`) that produced them.

    Attributes:
        name: Name of the store, also its registry name.
    """

    name: str

    def put(self, obj: Any, *, ttl: float | None = None, readers: int | None = None) -> str:
        """Store one object.

        Args:
            obj: Any serializable object, including ``None``.
            ttl: Seconds until the object expires; ``None`` uses the store's default.
            readers: Delete the object atomically after this many reads (fan-out).

        Returns:
            The object's key.
        """
        ...

    def put_batch(
        self, objs: Sequence[Any], *, ttl: float | None = None, readers: int | None = None
    ) -> list[str]:
        """Store several objects in one round trip; returns their keys in order."""
        ...

    def get(
        self,
        key: str,
        *,
        default: Any = MISSING,
        evict: bool = False,
        deserializer: Deserializer | None = None,
    ) -> Any:
        """Return the object stored under ``key``.

        Args:
            key: A key returned by :meth:`put`.
            default: Returned when the key is absent; without it an absent key raises.
            evict: Delete the object in the same atomic step as reading it.
            deserializer: Turns the stored bytes of an object put with a custom
                serializer back into the object; ``None`` uses the store's own.

        Returns:
            The object, or ``default``.

        Raises:
            ObjectNotFoundError: If the key is absent and no default was given.
        """
        ...

    def get_batch(
        self, keys: Sequence[str], *, default: Any = MISSING, evict: bool = False
    ) -> list[Any]:
        """Return several objects in one round trip (see :meth:`get`)."""
        ...

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``."""
        ...

    def evict(self, key: str) -> None:
        """Delete the object under ``key``; absent keys are ignored."""
        ...

    def proxy(self, obj: Any, *, evict: bool = False, ttl: float | None = None) -> Proxy[Any]:
        """Store ``obj`` and return a lazy proxy that fetches it on first use."""
        ...

    def proxy_batch(
        self, objs: Sequence[Any], *, evict: bool = False, ttl: float | None = None
    ) -> list[Proxy[Any]]:
        """Store several objects in one round trip and return a proxy for each."""
        ...

    def proxy_from_key(self, key: str, *, evict: bool = False) -> Proxy[Any]:
        """Return a lazy proxy of an object already stored under ``key``."""
        ...

    def config(self) -> StoreConfig:
        """Return the JSON-serialisable config that rebuilds this store elsewhere."""
        ...

    @classmethod
    def from_config(cls, config: StoreConfig) -> StoreProtocol:
        """Build a store from :meth:`config` output (credentials come from the environment)."""
        ...

    def close(self) -> None:
        """Release the store's resources; calling it again does nothing."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class StagingStore(Protocol):
    """Optional capability: hand a batch's writes to a publisher instead of sending them.

    A publisher on the same Redis (:attr:`connection`) runs the staged commands before
    the event that names the keys, in the same round trip, and publishes the event only
    if every write succeeded: an event never names an object that was not stored.

    Attributes:
        connection: The connection the staged commands must be sent on.
    """

    connection: Any

    def stage_batch(
        self, objs: Sequence[Any], *, ttl: float | None = None, readers: int | None = None
    ) -> StagedBatch:
        """Serialize ``objs`` and return their keys and the commands that store them, unsent.

        Args:
            objs: The objects.
            ttl: Lifetime in seconds; ``None`` uses the store's default.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            The keys and the writes (``StagedBatch.commands`` are opaque Redis commands).
        """
        ...

    def stage_encoded(
        self, values: Sequence[Any], *, ttl: float | None = None, readers: int | None = None
    ) -> StagedBatch:
        """:meth:`stage_batch` for objects this store serialized beforehand (``encode``).

        Args:
            values: The store's ``encode`` output (:class:`~framework.store.Encoded`).
            ttl: Lifetime in seconds; ``None`` uses the store's default.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            The keys and the writes.
        """
        ...

"""``Store`` (also ``BaseStore``): everything a store needs except where the bytes go.

Subclasses implement five byte-level hooks (:meth:`Store._write`, :meth:`~Store._read`,
:meth:`~Store._exists`, :meth:`~Store._delete`, :meth:`~Store._options`); the base class
adds serialization (framed, optionally HMAC-signed, see :mod:`framework.serialize`),
ProxyStore's custom ``serializer``/``deserializer`` functions, argument checks,
``MISSING``/default handling, proxies, lifetimes, registration, ``config()``/
``from_config()`` and an idempotent ``close()`` that unregisters the store. The put and
get methods are mixins (:mod:`framework.store._putting`, :mod:`framework.store._getting`),
as the proxy methods are (:mod:`framework.store._proxying`).

ProxyStore's construction ``Store(name, connector, ...)`` builds the store class that
the connector names (``RedisConnector`` builds a :class:`~framework.store.RedisStore`);
``Store.from_config(config)`` builds the class registered for the config's kind. This
module imports no Redis code.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from framework.buffers import BytesLike, Segments
from framework.exceptions import (
    ClosedError,
    ConfigurationError,
    StoreError,
    UnknownStoreKindError,
)
from framework.store._custom import custom_functions
from framework.store._getting import KEEP_UNREADABLE as KEEP_UNREADABLE  # for stores
from framework.store._getting import GetMethods
from framework.store._getting import Unreadable as Unreadable  # framework-internal users
from framework.store._getting import decoded as decoded
from framework.store._options import (
    CUSTOM_SERIALIZER,
    SECRET_ENV_VAR,
    checked_ttl,
    construct,
    not_text,
)
from framework.store._proxying import ProxyMethods
from framework.store._putting import PutMethods
from framework.store.codec import FrameCodec
from framework.store.config import StoreConfig
from framework.store.protocols import Deserializer, Serializer
from framework.store.registry import register_store, store_kind, unregister_store

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["SECRET_ENV_VAR", "BaseStore", "Store"]


class Store(PutMethods, GetMethods, ProxyMethods, abc.ABC):
    """Base class of every built-in store, and ProxyStore's ``Store(name, connector)``.

    ``Store(name, connector, ...)`` builds the store class the connector names, e.g.
    ``Store("objects", RedisConnector("localhost", 6379))`` is a
    :class:`~framework.store.RedisStore` that owns its connection. Subclass it (it is
    also exported as ``BaseStore``) and implement the byte-level hooks to write a store.

    Args:
        name: Name of the store (its registry name).
        serializer: Name of a registered serializer: ``"auto"`` (raw fast path for
            bytes-like/str, else cloudpickle), ``"pickle"``, ``"json"`` or ``"raw"``;
            with ``"json"`` or ``"raw"`` the store refuses to unpickle anything. Or, as
            in ProxyStore, a function turning an object into ``bytes``; ``None`` is
            ``"auto"``.
        deserializer: ProxyStore's function turning stored bytes back into an object
            (for stores whose ``serializer`` is a function).
        secret: Shared HMAC key; objects are signed, and unsigned or altered ones are
            refused before any deserialization.
        ttl: Default lifetime (seconds) of stored objects; ``None`` keeps them until
            evicted.
        register: Register the store under its name (``StoreExistsError`` if taken).
        populate_target: Default of ``proxy(populate_target=...)``: proxies made here
            start resolved with the object at hand (ProxyStore's default is ``True``).
        cache_size: Accepted for ProxyStore compatibility; there is no client-side
            cache (objects are read from the backend each time). Must be >= 0.
        metrics: ProxyStore's operation metrics are not recorded: only ``False``.

    Raises:
        ConfigurationError: If an argument is invalid.
        StoreExistsError: If ``register`` and another store has the name.
    """

    #: Registry kind (``StoreConfig.kind``) of the subclass.
    kind: ClassVar[str] = ""
    #: ProxyStore's metrics of a store built with ``metrics=False``: there are none.
    metrics: ClassVar[None] = None

    def __class_getitem__(cls, item: Any) -> type[Store]:
        """``Store[ConnectorT]`` (ProxyStore's generic form) is ``Store``."""
        return cls

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """Allocate the store; ``Store(name, connector)`` allocates the connector's class."""
        if cls is Store:  # Store(name, connector): the connector picks the class
            connector = args[1] if len(args) > 1 else kwargs.get("connector")
            store_type = getattr(connector, "store_type", None)
            if not (isinstance(store_type, type) and issubclass(store_type, cls)):
                raise TypeError(
                    f"Store(name, connector) needs a connector such as RedisConnector(hostname, "
                    f"port), got {type(connector).__name__}; or build a store class directly."
                )
            cls = store_type
        return super().__new__(cls)

    def __init__(
        self,
        name: str,
        *,
        serializer: str | Serializer | None = "auto",
        deserializer: Deserializer | None = None,
        secret: bytes | None = None,
        ttl: float | None = None,
        register: bool = False,
        populate_target: bool = False,
        cache_size: int = 0,
        metrics: bool = False,
    ) -> None:
        if metrics:
            raise ConfigurationError("metrics=True is not supported: stores record no metrics.")
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"A store name must be a non-empty string, got {name!r}.")
        self.name = name
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ConfigurationError("A store secret must be non-empty bytes.")
        if type(cache_size) is not int or cache_size < 0:
            raise ConfigurationError(f"cache_size must be an int >= 0, got {cache_size!r}.")
        self.serializer, self.deserializer = custom_functions(serializer, deserializer)
        self._serializer_name = CUSTOM_SERIALIZER if self.serializer else (serializer or "auto")
        self._signed = secret is not None
        codec_name = "raw" if self.serializer else str(self._serializer_name)
        self._codec = FrameCodec(codec_name, secret)
        self.default_ttl = checked_ttl(ttl)
        self.populate_target = bool(populate_target)
        self._closed = False
        self._close_lock = threading.Lock()
        self._config: StoreConfig | None = None
        if register:
            register_store(self)

    # -- hooks ---------------------------------------------------------------------------

    @abc.abstractmethod
    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        """Store serialized objects (in one round trip if the backend has round trips).

        Args:
            frames: One serialized object each.
            ttl: Lifetime in seconds, or ``None`` for no expiry.
            readers: Delete each object atomically after this many reads, or ``None``.

        Returns:
            The new keys, in order.
        """

    @abc.abstractmethod
    def _read(self, keys: Sequence[str], *, evict: bool) -> Sequence[BytesLike | StoreError | None]:
        """Fetch serialized objects; ``None`` for absent (or unknown, malformed) keys.

        Each read of a ``readers=N`` object counts, and the N-th deletes it atomically.
        With ``evict`` each object is deleted in the same atomic step as its read, so
        concurrent readers never both receive it. A :class:`StoreError` in place of a
        value fails that object alone (something unusable sits at its key); raising
        fails the whole call.
        """

    @abc.abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether ``key`` holds an object (``False`` for malformed keys)."""

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Delete ``key``'s object; absent or malformed keys are ignored."""

    def _delete_batch(self, keys: Sequence[str]) -> None:
        """Delete the objects of ``keys``; stores that can do it in one step override this."""
        for key in keys:
            self._delete(key)

    def _options(self) -> dict[str, Any]:
        """Constructor keyword arguments (plain JSON, no secrets) that rebuild the store."""
        return {}

    def _close(self) -> None:
        """Release backend resources; called once by :meth:`close`."""

    def _expire(self, keys: Sequence[str], ttl: float) -> None:
        """Give stored objects a new lifetime (optional; leases need it)."""
        raise StoreError(f"Store {self.name!r} cannot change the lifetime of stored objects.")

    # -- objects -------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Return whether an object is stored under ``key``.

        Raises:
            ClosedError: If the store is closed.
        """
        self._check_open()
        return self._exists(key)

    def evict(self, key: str) -> None:
        """Delete the object under ``key``; absent keys are ignored.

        Raises:
            ClosedError: If the store is closed.
        """
        self._check_open()
        self._delete(key)

    def evict_batch(self, keys: Sequence[str]) -> None:
        """Delete the objects under ``keys`` (one round trip on Redis); absent keys are ignored.

        Raises:
            ClosedError: If the store is closed.
        """
        not_text("evict_batch", "keys", keys)
        self._check_open()
        self._delete_batch(keys)

    @property
    def can_expire(self) -> bool:
        """Whether :meth:`expire` works here (a ``LeaseLifetime`` needs it)."""
        return type(self)._expire is not Store._expire

    def expire(self, keys: Sequence[str], ttl: float) -> None:
        """Give the objects under ``keys`` a new lifetime of ``ttl`` seconds from now.

        Raises:
            StoreError: If the store cannot change the lifetime of stored objects.
            ClosedError: If the store is closed.
        """
        self._check_open()
        if keys:
            self._expire(keys, max(ttl, 0.001))

    # -- config and lifecycle ------------------------------------------------------------

    def config(self) -> StoreConfig:
        """Return the config that rebuilds this store, in this or another process.

        It never holds a secret: ``"signed": true`` tells the rebuilding process to take
        the secret from its own environment (``FRAMEWORK_SECRET``) or registry. Nor can
        it hold custom serializer functions (``"serializer": "custom"``): register a
        store built with the same functions where the config is used.
        """
        if self._config is None:
            options: dict[str, Any] = {"serializer": self._serializer_name, "ttl": self.default_ttl}
            if self._signed:
                options["signed"] = True
            if self.populate_target:
                options["populate_target"] = True
            options.update(self._options())
            self._config = StoreConfig(kind=self.kind, name=self.name, options=options)
        return self._config

    @classmethod
    def from_config(cls, config: StoreConfig) -> Self:
        """Build a store from :meth:`config` output.

        On ``Store`` itself (as in ProxyStore) the class registered for the config's
        kind builds it.

        Args:
            config: The config.

        Returns:
            A new store equal in config to the one that produced ``config``.

        Raises:
            ConfigurationError: If the config does not fit this class, it signs
                objects and ``FRAMEWORK_SECRET`` is not set here, or it names custom
                serializer functions.
            UnknownStoreKindError: If ``Store.from_config`` meets an unregistered kind.
        """
        if cls is Store:
            kind_class = store_kind(config.kind)
            if kind_class is None:
                raise UnknownStoreKindError(
                    f"Store {config.name!r} has kind {config.kind!r}, which is not registered."
                )
            built: Self = kind_class.from_config(config)
            return built
        return construct(cls, config)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Release the store's resources and unregister it; calling it again does nothing.

        Objects already stored stay in the backend (unless the backend is this process's
        memory). Proxies of this store that resolve later find or rebuild an open store
        from its config.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        unregister_store(self)
        self._close()

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<{type(self).__name__} {self.name!r}{state}>"

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"Store {self.name!r} is closed.")


#: The name the project used for :class:`Store` before ProxyStore's construction form.
BaseStore = Store

"""``Store`` (also ``BaseStore``): everything a store needs except where the bytes go.

Subclasses implement five byte-level hooks (:meth:`Store._write`, :meth:`~Store._read`,
:meth:`~Store._exists`, :meth:`~Store._delete`, :meth:`~Store._options`); the base class
adds serialization (framed, optionally HMAC-signed, see :mod:`framework.serialize`),
ProxyStore's custom ``serializer``/``deserializer`` functions, argument checks,
``MISSING``/default handling, proxies, lifetimes, registration, ``config()``/
``from_config()`` and an idempotent ``close()`` that unregisters the store.

ProxyStore's construction ``Store(name, connector, ...)`` builds the store class that
the connector names (``RedisConnector`` builds a :class:`~framework.store.RedisStore`);
``Store.from_config(config)`` builds the class registered for the config's kind. This
module imports no Redis code.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from framework.buffers import BytesLike, Segments
from framework.exceptions import (
    ClosedError,
    ConfigurationError,
    FrameworkError,
    ObjectNotFoundError,
    SerializationError,
    StoreError,
    UnknownStoreKindError,
)
from framework.store._custom import custom_bytes, custom_functions, custom_object
from framework.store._options import (
    CUSTOM_SERIALIZER,
    SECRET_ENV_VAR,
    checked_ttl,
    construct,
)
from framework.store._proxying import ProxyMethods
from framework.store.codec import FrameCodec
from framework.store.config import StoreConfig
from framework.store.layout import Encoded
from framework.store.lifetimes import LeaseLifetime, Lifetime
from framework.store.protocols import MISSING, Deserializer, Serializer
from framework.store.registry import register_store, store_kind, unregister_store

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["SECRET_ENV_VAR", "BaseStore", "Store"]


class Unreadable:
    """A stored value that could not be verified or deserialized, in place of its object.

    Framework-internal (not exported): :meth:`Store._get_each` returns it, so the
    stream consumer can fail that object alone.

    Attributes:
        error: Why (a framing, security or deserialization error).
    """

    __slots__ = ("error",)

    def __init__(self, error: FrameworkError) -> None:
        self.error = error


def decoded(decode: Callable[[Any], Any], value: Any) -> Any:
    """``decode(value)``, or an :class:`Unreadable` holding the framework error it raised."""
    try:
        return decode(value)
    except FrameworkError as exc:
        return Unreadable(exc)


def _not_text(method: str, what: str, value: Any) -> None:
    """A str or bytes given for a sequence of items is a mistake, not items of one char."""
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{method} takes a list of {what}, not a {type(value).__name__} "
            f"({value!r:.40}); wrap a single one in a list."
        )


def _fetched(decode: Callable[[Any], Any], value: Any) -> Any:
    """One value of :meth:`BaseStore._read`: ``MISSING``, an :class:`Unreadable` or the object."""
    if value is None:
        return MISSING
    if isinstance(value, StoreError):
        return Unreadable(value)
    return decoded(decode, value)


class Store(ProxyMethods, abc.ABC):
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

    def put(
        self,
        obj: Any,
        *,
        ttl: float | None = None,
        readers: int | None = None,
        lifetime: Lifetime | None = None,
        serializer: Serializer | None = None,
    ) -> str:
        """Serialize and store one object (see :meth:`put_batch`)."""
        return self.put_batch(
            [obj], ttl=ttl, readers=readers, lifetime=lifetime, serializer=serializer
        )[0]

    def put_batch(
        self,
        objs: Sequence[Any],
        *,
        ttl: float | None = None,
        readers: int | None = None,
        lifetime: Lifetime | None = None,
        serializer: Serializer | None = None,
    ) -> list[str]:
        """Serialize and store several objects in one backend round trip.

        Args:
            objs: The objects; ``None`` is stored like any other value.
            ttl: Lifetime in seconds; ``None`` uses the store's default ``ttl``.
            readers: Delete each object atomically after this many reads (fan-out).
            lifetime: Evict the objects when this lifetime ends (a lease also sets
                their TTL to the time it has left).
            serializer: A function turning each object into ``bytes``, stored as
                they are (read them back with a matching ``deserializer``).

        Returns:
            One key per object, in order.

        Raises:
            ConfigurationError: If ``ttl`` or ``readers`` is invalid.
            SerializationError: If an object cannot be serialized.
            ClosedError: If the store is closed.
            RuntimeError: If ``lifetime`` has ended.
            TypeError: If ``objs`` is a str or bytes (a list of objects is expected).
        """
        _not_text("put_batch", "objects", objs)
        if isinstance(lifetime, LeaseLifetime):
            ttl = lifetime.remaining() if ttl is None else min(ttl, lifetime.remaining())
        ttl = self._checked_put(ttl, readers)
        if lifetime is not None and lifetime.done():
            raise RuntimeError(f"Lifetime {lifetime!r} has ended; it takes no more objects.")
        if not objs:
            return []
        encode = serializer or self.serializer
        if encode is not None:
            objs = [custom_bytes(encode, obj) for obj in objs]
        keys = self._put_objects(objs, ttl=ttl, readers=readers)
        if lifetime is not None:
            lifetime.add_key(*keys, store=self)
        return keys

    def encode(self, obj: Any) -> Encoded:
        """Serialize ``obj`` as :meth:`put_batch` would, without storing it.

        With :meth:`put_encoded` this splits a put in two, so that a caller can refuse
        an object that cannot be serialized before it commits to storing anything.

        Args:
            obj: The object (the store's custom ``serializer`` function applies).

        Returns:
            The stored form; only this store's :meth:`put_encoded` may store it.

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
            TypeError: If a custom serializer function returns something other than bytes.
        """
        value = obj if self.serializer is None else custom_bytes(self.serializer, obj)
        return Encoded(self._codec.encode(value))

    def put_encoded(
        self, values: Sequence[Encoded], *, ttl: float | None = None, readers: int | None = None
    ) -> list[str]:
        """Store objects serialized by :meth:`encode`, in one backend round trip.

        Args:
            values: This store's :meth:`encode` output, one per object.
            ttl: Lifetime in seconds; ``None`` uses the store's default ``ttl``.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            One key per object, in order.

        Raises:
            ConfigurationError: If ``ttl`` or ``readers`` is invalid.
            ClosedError: If the store is closed.
        """
        ttl = self._checked_put(ttl, readers)
        if not values:
            return []
        return self._write_encoded(values, ttl=ttl, readers=readers)

    def _write_encoded(
        self, values: Sequence[Encoded], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        """Store checked, non-empty :meth:`encode` output; override with :meth:`encode`."""
        frames = [v.value if isinstance(v.value, Segments) else Segments([v.value]) for v in values]
        return self._write(frames, ttl=ttl, readers=readers)

    def _checked_put(self, ttl: float | None, readers: int | None) -> float | None:
        """Check a put's state and arguments; return the effective ``ttl``."""
        self._check_open()
        if readers is not None and (type(readers) is not int or readers < 1):
            raise ConfigurationError(f"readers must be a positive int or None, got {readers!r}.")
        return self.default_ttl if ttl is None else checked_ttl(ttl)

    def _put_objects(
        self, objs: Sequence[Any], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        """Serialize and store checked, non-empty ``objs``; override to lay out objects."""
        return self._write([self._codec.encode(obj) for obj in objs], ttl=ttl, readers=readers)

    def get(
        self,
        key: str,
        *,
        default: Any = MISSING,
        evict: bool = False,
        deserializer: Deserializer | None = None,
    ) -> Any:
        """Return one object (see :meth:`get_batch`)."""
        return self.get_batch([key], default=default, evict=evict, deserializer=deserializer)[0]

    def get_batch(
        self,
        keys: Sequence[str],
        *,
        default: Any = MISSING,
        evict: bool = False,
        deserializer: Deserializer | None = None,
    ) -> list[Any]:
        """Return several objects, fetched in one backend round trip.

        Args:
            keys: Keys returned by :meth:`put`.
            default: Returned for absent keys; when not given, an absent key raises.
            evict: Delete each object atomically with its read (get-and-delete).
            deserializer: A function turning the stored bytes of objects put with a
                custom serializer back into objects; ``None`` uses the store's own.

        Returns:
            The objects (or ``default``), in order. A stored ``None`` comes back as ``None``.

        Raises:
            ObjectNotFoundError: If a key is absent and no default was given. With
                ``evict`` the other objects of the call are consumed all the same.
            SecurityError: If the store has a secret and an object is unsigned or altered.
            DeserializationError: If an object cannot be deserialized.
            ClosedError: If the store is closed.
        """
        _not_text("get_batch", "keys", keys)
        objs = self._get_each(keys, evict=evict, deserializer=deserializer)
        for i, obj in enumerate(objs):
            if isinstance(obj, Unreadable):
                raise obj.error
            if obj is MISSING:
                if default is MISSING:
                    raise ObjectNotFoundError(keys[i], self.name)
                objs[i] = default
        return objs

    def _get_each(
        self, keys: Sequence[str], *, evict: bool, deserializer: Deserializer | None = None
    ) -> list[Any]:
        """Fetch ``keys``' objects in one round trip, each on its own (framework use only).

        Returns:
            Per key, in order: the object, ``MISSING`` if absent, or an
            :class:`Unreadable` holding why it could not be verified or deserialized.
            One forged or corrupt value spoils no other object of the call, which
            matters with ``evict``: the others were deleted by this very read.

        Raises:
            ClosedError: If the store is closed.
        """
        self._check_open()
        if not keys:
            return []
        objs = self._get_objects(list(keys), evict=evict)
        decode = deserializer or self.deserializer
        if decode is not None:
            for i, obj in enumerate(objs):
                if obj is MISSING or isinstance(obj, Unreadable):
                    continue
                try:
                    objs[i] = custom_object(decode, obj, keys[i])
                except SerializationError as exc:
                    objs[i] = Unreadable(exc)
        return objs

    def _get_objects(self, keys: list[str], *, evict: bool) -> list[Any]:
        """Fetch and deserialize ``keys``' objects (overridable).

        Returns:
            Per key: the object, ``MISSING`` if absent, or an :class:`Unreadable`.
        """
        decode = self._codec.decode
        return [_fetched(decode, v) for v in self._read(keys, evict=evict)]

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
        _not_text("evict_batch", "keys", keys)
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

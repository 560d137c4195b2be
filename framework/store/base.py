"""``BaseStore``: everything a store needs except where the bytes go.

Subclasses implement five byte-level hooks (:meth:`BaseStore._write`,
:meth:`~BaseStore._read`, :meth:`~BaseStore._exists`, :meth:`~BaseStore._delete`,
:meth:`~BaseStore._options`); the base class adds serialization (framed, optionally
HMAC-signed, see :mod:`framework.serialize`), argument checks, ``MISSING``/default
handling, proxies, ``config()``/``from_config()`` and an idempotent ``close()``.
It imports no Redis code.
"""

from __future__ import annotations

import abc
import math
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from framework.buffers import BytesLike, Segments
from framework.exceptions import ClosedError, ConfigurationError, ObjectNotFoundError
from framework.store.codec import FrameCodec
from framework.store.config import StoreConfig
from framework.store.protocols import MISSING
from framework.store.proxy import Proxy, StoreFactory

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["SECRET_ENV_VAR", "BaseStore"]

#: Environment variable holding the shared HMAC secret (UTF-8) used by ``from_config``
#: when a config says its store signs objects. Configs never carry the secret itself.
SECRET_ENV_VAR = "FRAMEWORK_SECRET"  # noqa: S105 - the variable name, not a secret


class BaseStore(abc.ABC):
    """Base class of the built-in stores; subclass it to write your own.

    Args:
        name: Name of the store (its registry name).
        serializer: Name of a registered serializer: ``"auto"`` (raw fast path for
            bytes-like/str, else cloudpickle), ``"pickle"``, ``"json"`` or ``"raw"``.
            With ``"json"`` or ``"raw"`` the store refuses to unpickle anything.
        secret: Shared HMAC key; objects are signed, and unsigned or altered ones are
            refused before any deserialization.
        ttl: Default lifetime (seconds) of stored objects; ``None`` keeps them until
            evicted.

    Raises:
        ConfigurationError: If an argument is invalid.
    """

    #: Registry kind (``StoreConfig.kind``) of the subclass.
    kind: ClassVar[str] = ""

    def __init__(
        self,
        name: str,
        *,
        serializer: str = "auto",
        secret: bytes | None = None,
        ttl: float | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"A store name must be a non-empty string, got {name!r}.")
        self.name = name
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise ConfigurationError("A store secret must be non-empty bytes.")
        self._serializer_name = serializer
        self._signed = secret is not None
        self._codec = FrameCodec(serializer, secret)
        self.default_ttl = _checked_ttl(ttl)
        self._closed = False
        self._close_lock = threading.Lock()
        self._config: StoreConfig | None = None

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
    def _read(self, keys: Sequence[str], *, evict: bool) -> Sequence[BytesLike | None]:
        """Fetch serialized objects; ``None`` for absent (or unknown, malformed) keys.

        Each read of a ``readers=N`` object counts, and the N-th deletes it atomically.
        With ``evict`` each object is deleted in the same atomic step as its read, so
        concurrent readers never both receive it.
        """

    @abc.abstractmethod
    def _exists(self, key: str) -> bool:
        """Whether ``key`` holds an object (``False`` for malformed keys)."""

    @abc.abstractmethod
    def _delete(self, key: str) -> None:
        """Delete ``key``'s object; absent or malformed keys are ignored."""

    def _options(self) -> dict[str, Any]:
        """Constructor keyword arguments (plain JSON, no secrets) that rebuild the store."""
        return {}

    def _close(self) -> None:  # noqa: B027 - optional hook, deliberately a no-op
        """Release backend resources; called once by :meth:`close`."""

    # -- objects -------------------------------------------------------------------------

    def put(self, obj: Any, *, ttl: float | None = None, readers: int | None = None) -> str:
        """Serialize and store one object (see :meth:`put_batch`)."""
        return self.put_batch([obj], ttl=ttl, readers=readers)[0]

    def put_batch(
        self, objs: Sequence[Any], *, ttl: float | None = None, readers: int | None = None
    ) -> list[str]:
        """Serialize and store several objects in one backend round trip.

        Args:
            objs: The objects; ``None`` is stored like any other value.
            ttl: Lifetime in seconds; ``None`` uses the store's default ``ttl``.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            One key per object, in order.

        Raises:
            ConfigurationError: If ``ttl`` or ``readers`` is invalid.
            SerializationError: If an object cannot be serialized.
            ClosedError: If the store is closed.
        """
        ttl = self._checked_put(ttl, readers)
        if not objs:
            return []
        return self._put_objects(objs, ttl=ttl, readers=readers)

    def _checked_put(self, ttl: float | None, readers: int | None) -> float | None:
        """Check a put's state and arguments; return the effective ``ttl``."""
        self._check_open()
        if readers is not None and (type(readers) is not int or readers < 1):
            raise ConfigurationError(f"readers must be a positive int or None, got {readers!r}.")
        return self.default_ttl if ttl is None else _checked_ttl(ttl)

    def _put_objects(
        self, objs: Sequence[Any], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        """Serialize and store checked, non-empty ``objs``; override to lay out objects."""
        return self._write([self._codec.encode(obj) for obj in objs], ttl=ttl, readers=readers)

    def get(self, key: str, *, default: Any = MISSING, evict: bool = False) -> Any:
        """Return one object (see :meth:`get_batch`)."""
        return self.get_batch([key], default=default, evict=evict)[0]

    def get_batch(
        self, keys: Sequence[str], *, default: Any = MISSING, evict: bool = False
    ) -> list[Any]:
        """Return several objects, fetched in one backend round trip.

        Args:
            keys: Keys returned by :meth:`put`.
            default: Returned for absent keys; when not given, an absent key raises.
            evict: Delete each object atomically with its read (get-and-delete).

        Returns:
            The objects (or ``default``), in order. A stored ``None`` comes back as ``None``.

        Raises:
            ObjectNotFoundError: If a key is absent and no default was given. With
                ``evict`` the other objects of the call are consumed all the same.
            SecurityError: If the store has a secret and an object is unsigned or altered.
            DeserializationError: If an object cannot be deserialized.
            ClosedError: If the store is closed.
        """
        self._check_open()
        if not keys:
            return []
        objs = self._get_objects(list(keys), evict=evict)
        for i, obj in enumerate(objs):
            if obj is MISSING:
                if default is MISSING:
                    raise ObjectNotFoundError(keys[i], self.name)
                objs[i] = default
        return objs

    def _get_objects(self, keys: list[str], *, evict: bool) -> list[Any]:
        """Fetch and deserialize ``keys``' objects, ``MISSING`` for absent ones (overridable)."""
        decode = self._codec.decode
        return [MISSING if v is None else decode(v) for v in self._read(keys, evict=evict)]

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

    # -- proxies -------------------------------------------------------------------------

    def proxy(self, obj: Any, *, evict: bool = False, ttl: float | None = None) -> Proxy[Any]:
        """Store ``obj`` and return a lazy proxy of it.

        Args:
            obj: The object.
            evict: Delete the object from the store when the proxy resolves (then only
                one proxy, in one process, can ever resolve it).
            ttl: Lifetime in seconds; ``None`` uses the store's default.

        Returns:
            A proxy that fetches the object on first use; it pickles as key plus config.
        """
        return self.proxy_batch([obj], evict=evict, ttl=ttl)[0]

    def proxy_batch(
        self, objs: Sequence[Any], *, evict: bool = False, ttl: float | None = None
    ) -> list[Proxy[Any]]:
        """Store several objects in one round trip; return a proxy of each (see :meth:`proxy`)."""
        return [self.proxy_from_key(key, evict=evict) for key in self.put_batch(objs, ttl=ttl)]

    def proxy_from_key(self, key: str, *, evict: bool = False) -> Proxy[Any]:
        """Return a lazy proxy of the object already stored under ``key``.

        Args:
            key: Key of the object.
            evict: Delete the object from the store when the proxy resolves.

        Returns:
            The proxy; a missing object surfaces as ``ProxyResolveError`` on first use.
        """
        return Proxy(StoreFactory(key, self.config(), evict=evict, store=self))

    # -- config and lifecycle ------------------------------------------------------------

    def config(self) -> StoreConfig:
        """Return the config that rebuilds this store, in this or another process.

        It never holds a secret: ``"signed": true`` tells the rebuilding process to take
        the secret from its own environment (``FRAMEWORK_SECRET``) or registry.
        """
        if self._config is None:
            options: dict[str, Any] = {"serializer": self._serializer_name, "ttl": self.default_ttl}
            if self._signed:
                options["signed"] = True
            options.update(self._options())
            self._config = StoreConfig(kind=self.kind, name=self.name, options=options)
        return self._config

    @classmethod
    def from_config(cls, config: StoreConfig) -> Self:
        """Build a store from :meth:`config` output.

        Args:
            config: The config.

        Returns:
            A new store equal in config to the one that produced ``config``.

        Raises:
            ConfigurationError: If the config does not fit this class, or it signs
                objects and ``FRAMEWORK_SECRET`` is not set here.
        """
        try:
            return cls(config.name, **_constructor_options(config))
        except TypeError as exc:  # an option the constructor does not take
            raise ConfigurationError(
                f"Config of store {config.name!r} (kind {config.kind!r}) does not fit "
                f"{cls.__name__}: {exc}"
            ) from exc

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def close(self) -> None:
        """Release the store's resources; calling it again does nothing.

        Objects already stored stay in the backend (unless the backend is this process's
        memory). The store is not unregistered: see ``unregister_store``.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
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


def _checked_ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"ttl must be a number of seconds or None, got {ttl!r}.")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ConfigurationError(f"ttl must be a positive, finite number of seconds, got {ttl!r}.")
    return float(ttl)


def _constructor_options(config: StoreConfig) -> dict[str, Any]:
    """Turn config options into constructor kwargs, fetching the secret if one is needed."""
    options = dict(config.options)
    if options.pop("signed", False):
        secret = os.environ.get(SECRET_ENV_VAR, "")
        if not secret:
            raise ConfigurationError(
                f"Store {config.name!r} signs its objects, but {SECRET_ENV_VAR} is not set in "
                "this process: set it, or register a store built with the secret."
            )
        options["secret"] = secret.encode()
    return options

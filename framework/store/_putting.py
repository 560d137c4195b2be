"""The write side of :class:`~framework.store.Store`: check, serialize, then store.

Serializing is kept apart from storing (:meth:`~PutMethods.encode` and
:meth:`~PutMethods.put_encoded`) so that a caller holding several objects, such as the
stream producer, can refuse one that cannot be serialized before anything is stored.
A mixin over the store's ``_write`` hook; no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from framework.buffers import Segments
from framework.exceptions import ConfigurationError
from framework.store._custom import custom_bytes
from framework.store._options import checked_ttl, not_text
from framework.store.layout import Encoded
from framework.store.lifetimes import LeaseLifetime, Lifetime
from framework.store.protocols import Serializer

if TYPE_CHECKING:
    from framework.serialize import Serializer as FrameSerializer
    from framework.store.base import Store
    from framework.store.codec import FrameCodec

__all__ = ["PutMethods"]


class PutMethods:
    """``put``, ``put_batch``, ``encode`` and ``put_encoded``, with their checks."""

    serializer: Serializer | None
    default_ttl: float | None
    _codec: FrameCodec

    if TYPE_CHECKING:  # provided by the store this mixin is part of

        def _write(
            self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
        ) -> list[str]: ...

        def _check_open(self) -> None: ...

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
        not_text("put_batch", "objects", objs)
        if isinstance(lifetime, LeaseLifetime):
            left = lifetime.remaining()
            # An ended lease has 0 s left, which the TTL check would refuse as a bad
            # argument the caller never gave.
            if left > 0:
                ttl = left if ttl is None else min(ttl, left)
        if lifetime is not None and lifetime.done():
            raise RuntimeError(f"Lifetime {lifetime!r} has ended; it takes no more objects.")
        ttl = self._checked_put(ttl, readers)
        if not objs:
            return []
        encode = serializer or self.serializer
        if encode is not None:
            objs = [custom_bytes(encode, obj) for obj in objs]
        keys = self._put_objects(objs, ttl=ttl, readers=readers)
        if lifetime is not None:
            lifetime.add_key(*keys, store=cast("Store", self))
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

    def encode_serialized(
        self, obj: Any, frame: Segments, serializer: FrameSerializer | None = None
    ) -> Encoded:
        """:meth:`encode`, given ``frame``, the :func:`~framework.serialize.dumps` frame of ``obj``.

        A caller that already serialized ``obj`` (a producer that found it too big to
        carry inline, say) hands its frame over. Stores that serialize ``obj`` alike
        (:class:`~framework.store.RedisStore`) reuse it, signing it if they sign, instead
        of serializing a large object a second time; this one serializes it again.

        Args:
            obj: The object.
            frame: ``dumps(obj, serializer=serializer)``, unsigned and without ``meta``.
            serializer: The serializer that made ``frame`` (None: the default).

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
        """
        return self.encode(obj)

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
        # Below 2**63: a count every backend keeps as a signed 64-bit integer (Redis's DECR).
        if readers is not None and (type(readers) is not int or not 1 <= readers < 2**63):
            raise ConfigurationError(
                f"readers must be a positive int below 2**63 or None, got {readers!r:.80}."
            )
        return self.default_ttl if ttl is None else checked_ttl(ttl)

    def _put_objects(
        self, objs: Sequence[Any], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        """Serialize and store checked, non-empty ``objs``; override to lay out objects."""
        return self._write([self._codec.encode(obj) for obj in objs], ttl=ttl, readers=readers)

"""The read side of :class:`~framework.store.Store`: fetch, decode, and fail one object alone.

A batch read with ``evict`` deletes every object it returns, so a value that cannot be
verified or deserialized must not cost the caller the other objects of the call:
each one is decoded on its own, and a failure travels as an :class:`Unreadable` in its
place. ``get_batch`` raises it; the stream consumer (through ``_get_each``) fails that
object alone. A mixin over the store's ``_read`` hook; no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from framework._core_errors import reworded
from framework.exceptions import (
    FrameworkError,
    ObjectNotFoundError,
    SerializationError,
    StoreError,
)
from framework.store._custom import custom_object
from framework.store._options import not_text
from framework.store.protocols import MISSING, Deserializer

if TYPE_CHECKING:
    from framework.buffers import BytesLike
    from framework.store.codec import FrameCodec

__all__ = ["KEEP_UNREADABLE", "GetMethods", "Unreadable", "decoded", "taken_unreadable"]

#: Seconds a value that an evicting read took but could not decode is kept, written back
#: so that it can be inspected: long enough for that, short enough not to pile up.
KEEP_UNREADABLE = 24 * 3600.0


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


def taken_unreadable(
    keys: Sequence[str], values: Sequence[Any], objs: Sequence[Any]
) -> list[tuple[str, BytesLike]]:
    """The ``(key, value)`` pairs of an evicting read whose value could not be decoded.

    A value that is None (absent) or a ``StoreError`` (nothing was taken) is not one.
    """
    return [
        (key, value)
        for key, value, obj in zip(keys, values, objs, strict=True)
        if isinstance(obj, Unreadable) and value is not None and not isinstance(value, StoreError)
    ]


def _fetched(decode: Callable[[Any], Any], value: Any) -> Any:
    """One value of :meth:`BaseStore._read`: ``MISSING``, an :class:`Unreadable` or the object."""
    if value is None:
        return MISSING
    if isinstance(value, StoreError):
        return Unreadable(value)
    return decoded(decode, value)


class GetMethods:
    """``get``, ``get_batch`` and the per-object reads the framework builds on."""

    name: str
    deserializer: Deserializer | None
    _codec: FrameCodec

    if TYPE_CHECKING:  # provided by the store this mixin is part of

        def _read(
            self, keys: Sequence[str], *, evict: bool
        ) -> Sequence[BytesLike | StoreError | None]: ...

        def _check_open(self) -> None: ...

    def get(
        self,
        key: str,
        *,
        default: Any = MISSING,
        evict: bool = False,
        deserializer: Deserializer | None = None,
        allow_pickle: bool = True,
    ) -> Any:
        """Return one object (see :meth:`get_batch`)."""
        objs = self.get_batch(
            [key],
            default=default,
            evict=evict,
            deserializer=deserializer,
            allow_pickle=allow_pickle,
        )
        return objs[0]

    def get_batch(
        self,
        keys: Sequence[str],
        *,
        default: Any = MISSING,
        evict: bool = False,
        deserializer: Deserializer | None = None,
        allow_pickle: bool = True,
    ) -> list[Any]:
        """Return several objects, fetched in one backend round trip.

        Args:
            keys: Keys returned by :meth:`put`.
            default: Returned for absent keys; when not given, an absent key raises.
            evict: Delete each object atomically with its read (get-and-delete).
            deserializer: A function turning the stored bytes of objects put with a
                custom serializer back into objects; ``None`` uses the store's own.
            allow_pickle: False refuses an object stored as a pickle, whatever the
                store's serializer, before anything is unpickled (a custom
                ``deserializer`` function is the caller's own and runs all the same).

        Returns:
            The objects (or ``default``), in order. A stored ``None`` comes back as ``None``.

        Raises:
            ObjectNotFoundError: If a key is absent and no default was given. With
                ``evict`` the other objects of the call are consumed all the same.
            SecurityError: If the store has a secret and an object is unsigned or altered.
            DeserializationError: If an object cannot be deserialized, or needs
                unpickling and ``allow_pickle`` is False.
            FramingError: If a stored value is not a frame this store wrote (garbage,
                truncated). Each error of an unreadable value names its key and store;
                with ``evict`` the value is put back for inspection where the store can.
            ClosedError: If the store is closed.
        """
        not_text("get_batch", "keys", keys)
        objs = self._get_each(
            keys, evict=evict, deserializer=deserializer, allow_pickle=allow_pickle
        )
        for i, obj in enumerate(objs):
            if isinstance(obj, Unreadable):
                raise self._named(obj.error, keys[i])
            if obj is MISSING:
                if default is MISSING:
                    raise ObjectNotFoundError(keys[i], self.name)
                objs[i] = default
        return objs

    def _named(self, error: FrameworkError, key: str) -> FrameworkError:
        """``error`` of a value that cannot be read, naming the object and store if it does not.

        Decoding knows only the bytes ("the frame is truncated"): among the keys of a
        batch, the reader needs to know which one to inspect.
        """
        if key in str(error):
            return error
        return reworded(error, f"Object {key!r} of store {self.name!r} cannot be read: {error}")

    def _get_each(
        self,
        keys: Sequence[str],
        *,
        evict: bool,
        deserializer: Deserializer | None = None,
        allow_pickle: bool = True,
    ) -> list[Any]:
        """Fetch ``keys``' objects in one round trip, each on its own (framework use only).

        With ``allow_pickle=False`` an object stored as a pickle is unreadable here.

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
        objs = self._get_objects(list(keys), evict=evict, allow_pickle=allow_pickle)
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

    def _get_objects(self, keys: list[str], *, evict: bool, allow_pickle: bool) -> list[Any]:
        """Fetch and deserialize ``keys``' objects (overridable).

        Returns:
            Per key: the object, ``MISSING`` if absent, or an :class:`Unreadable`
            (also an object stored as a pickle, when ``allow_pickle`` is False).
        """
        decode = partial(self._codec.decode, allow_pickle=allow_pickle)
        values = self._read(keys, evict=evict)
        objs = [_fetched(decode, v) for v in values]
        if evict:
            self._put_back(taken_unreadable(keys, values, objs))
        return objs

    def _missing_hint(self) -> str:
        """What else may explain an object missing here, for its error (override it).

        The default: nothing beyond eviction and expiry.
        """
        return ""

    def _put_back(self, taken: list[tuple[str, BytesLike]]) -> None:
        """Put back the values an evicting read took but could not decode (override it).

        A corrupt or forged object is evidence: deleting it on a failed read would
        leave nothing to inspect. Keep each ``(key, value)`` for :data:`KEEP_UNREADABLE`
        seconds, unless something else is under its key now. A failure must not be
        raised: the read itself succeeded. The default keeps nothing.
        """

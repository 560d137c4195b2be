"""Serializers and the object payload format: :func:`dumps` and :func:`loads`.

:func:`dumps` frames an object (see :mod:`framework.framing`) with the header
``{"ser": name, "meta": {...}}`` and the serializer's parts. The default serializer
sends bytes-like objects and ``str`` raw (exact bytes, bytearray and str through a
fast path, the same bytes on the wire), sends plain numpy arrays as a JSON header
and their buffer (no pickle) and pickles the rest with cloudpickle, protocol
5, without copying large buffers. A receiver given ``secret`` checks the MAC before any
deserializer runs. Serializer names read from the wire are looked up in a registry,
never imported. ``Frame``, ``encode_frame``, ``decode_frame`` and the frame constants
are re-exported.

Warning:
    Unpickling runs arbitrary code. Use the pickle serializer only where just
    trusted writers reach Redis, configure a shared secret, or pass
    ``allow_pickle=False`` and use the JSON or raw serializers.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Mapping
from typing import Any

from framework._ndarrays import plain_array
from framework.buffers import BytesLike, Segments
from framework.exceptions import (
    ConfigurationError,
    DeserializationError,
    FrameworkError,
    FramingError,
    SerializationError,
)
from framework.framing import (
    FRAME_VERSION,
    JOIN_MAX,
    MAC_BYTES,
    MAX_HEADER_BYTES,
    Frame,
    TaggedFrames,
    _encode_header,
    decode_frame,
    encode_frame,
)
from framework.serializers import (
    OUT_OF_BAND_MIN,
    AutoSerializer,
    JsonSerializer,
    NdarraySerializer,
    PickleSerializer,
    RawSerializer,
    Serializer,
    _type_name,
)

__all__ = [
    "DEFAULT_SERIALIZER",
    "FRAME_VERSION",
    "MAC_BYTES",
    "MAX_HEADER_BYTES",
    "OUT_OF_BAND_MIN",
    "AutoSerializer",
    "Frame",
    "JsonSerializer",
    "NdarraySerializer",
    "PickleSerializer",
    "RawSerializer",
    "Serializer",
    "decode_frame",
    "dumps",
    "encode_frame",
    "get_serializer",
    "loads",
    "loads_with_meta",
    "register_serializer",
    "unregister_serializer",
]

#: The serializer :func:`dumps` uses when none is given.
DEFAULT_SERIALIZER = AutoSerializer()

_BUILTINS: dict[str, Serializer] = {
    s.name: s
    for s in (
        PickleSerializer(),
        JsonSerializer(),
        RawSerializer(),
        DEFAULT_SERIALIZER.ndarray,
        DEFAULT_SERIALIZER,
    )
}
_registry: dict[str, Serializer] = dict(_BUILTINS)
#: Raw frames of exact bytes, bytearray and str (no meta) skip the general framing code.
_RAW_FRAMES = TaggedFrames({"ser": "raw"}, {bytes: b"b", bytearray: b"a", str: b"s"})
_FAST_SERIALIZERS = (type(None), AutoSerializer, RawSerializer)  # they frame those as raw
_FAST_ARRAYS = (type(None), AutoSerializer)  # they frame exact plain arrays as ndarray
_PREFIX = struct.Struct(">I")
#: Distinct array layouts / frame headers whose encoding :class:`_ArrayFrames` remembers.
_ARRAY_CACHE_SIZE = 1024
#: Longest wire header :class:`_ArrayFrames` looks at (a 64-dimension shape fits).
_ARRAY_HEADER_MAX = 4096


class _JoinedArray(Segments):
    """A small ndarray frame already in one ``bytes``; :meth:`join` returns it, uncopied."""

    __slots__ = ("_cuts", "_data")

    def __init__(self, data: bytes, head: int, part: int) -> None:  # nothing to view or sum
        self._data, self._cuts = data, (head, head + part)
        self.nbytes = len(data)

    @property
    def parts(self) -> tuple[memoryview, ...]:  # type: ignore[override]  # derived, read-only
        view, (head, end) = memoryview(self._data), self._cuts
        return (view[:head], view[head:end], view[end:])

    def join(self) -> bytes:
        return self._data


class _ArrayFrames:
    """Fast path for unsigned, meta-less ndarray frames: the same bytes, less work.

    The wire header and the array header part depend only on the array's dtype,
    shape and memory order, so :meth:`encode` builds them once (with the general
    code) and caches them (bounded). :meth:`decode` accepts only frames whose wire
    header is byte-for-byte one the general code writes for such a frame (learnt
    through :func:`decode_frame`); the array header part is still validated by
    :class:`NdarraySerializer`. Both return ``None`` to hand anything else over to
    the general path, which raises its usual errors.
    """

    def __init__(self, serializer: NdarraySerializer) -> None:
        self._serializer = serializer
        self._heads: dict[tuple[Any, tuple[int, ...], str], tuple[bytes, bytes]] = {}
        self._frames: dict[bytes, tuple[int, int]] = {}  # wire header -> its part lengths

    def encode(self, obj: Any) -> Segments | None:
        """Frame ``obj`` (an exact ``ndarray``) as :func:`dumps` does, or return ``None``."""
        flags = obj.flags
        order = "C" if flags.c_contiguous else "F" if flags.f_contiguous else ""
        key = (obj.dtype, obj.shape, order)
        cached = self._heads.get(key)
        if cached is None:
            if not order or not plain_array(obj):
                return None
            part = self._serializer.serialize(obj)[0]
            head = _encode_header({"ser": self._serializer.name}, [len(part), obj.nbytes], False)
            if len(self._heads) >= _ARRAY_CACHE_SIZE:
                self._heads.clear()  # many distinct layouts: start over rather than track use
            self._heads[key] = cached = (head, part)
        head, part = cached
        data = obj.ravel(order="A").view("u1")  # as NdarraySerializer.serialize views it
        if obj.nbytes <= JOIN_MAX:
            return _JoinedArray(b"".join((head, part, data)), len(head), len(part))
        return Segments((head, part, data))

    def decode(self, data: Any) -> Any:
        """Return the array of an unsigned ndarray frame ``data`` (bytes), or ``None``."""
        if type(data) is not bytes or len(data) < _PREFIX.size:
            return None
        end = _PREFIX.size + _PREFIX.unpack_from(data)[0]
        if end > min(len(data), _ARRAY_HEADER_MAX):  # ours are short: never copy much here
            return None
        lens = self._frames.get(data[:end]) or self._learn(data, end)
        if lens is None or len(data) != end + lens[0] + lens[1]:
            return None
        view = memoryview(data)
        return self._serializer.deserialize([view[end : end + lens[0]], view[end + lens[0] :]])

    def _learn(self, data: bytes, end: int) -> tuple[int, int] | None:
        """Cache ``data``'s wire header if the general code writes it for such a frame."""
        try:
            header, parts = decode_frame(data)
        except FrameworkError:
            return None  # the general path reports it
        lens = [len(part) for part in parts]
        if header != {"ser": self._serializer.name} or len(lens) != 2:
            return None
        if _encode_header(header, lens, False) != data[:end]:
            return None  # signed, or not written the way dumps writes it
        if len(self._frames) >= _ARRAY_CACHE_SIZE:
            self._frames.clear()
        self._frames[data[:end]] = known = (lens[0], lens[1])
        return known


_ARRAY_FRAMES = _ArrayFrames(DEFAULT_SERIALIZER.ndarray)


def _is_ndarray(obj: Any) -> bool:
    """Whether ``obj`` is an exact ``numpy.ndarray`` (numpy is never imported here)."""
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(obj) is numpy.ndarray


def register_serializer(serializer: Serializer, *, replace: bool = False) -> None:
    """Make ``serializer`` known to :func:`loads` and :func:`get_serializer` by its name.

    Raises:
        ConfigurationError: If the name is empty, built in, or taken (and not ``replace``).
    """
    name = getattr(serializer, "name", None)
    if not isinstance(name, str) or not name:
        raise ConfigurationError("A serializer needs a non-empty str name.")
    if name in _BUILTINS:
        raise ConfigurationError(f"The serializer name {name!r} is built in and reserved.")
    if _registry.get(name, serializer) is not serializer and not replace:
        raise ConfigurationError(f"A serializer named {name!r} is already registered.")
    _registry[name] = serializer


def unregister_serializer(name: str) -> None:
    """Forget a user serializer (no error if absent).

    Raises:
        ConfigurationError: If ``name`` is built in.
    """
    if name in _BUILTINS:
        raise ConfigurationError(f"The built-in serializer {name!r} cannot be unregistered.")
    _registry.pop(name, None)


def get_serializer(name: str) -> Serializer:
    """Return the serializer called ``name`` ("auto", "pickle", "json", "raw" or a user one).

    Raises:
        ConfigurationError: If no serializer has that name.
    """
    if name not in _registry:
        msg = f"No serializer is named {name!r}; known: {', '.join(sorted(_registry))}."
        raise ConfigurationError(msg)
    return _registry[name]


def dumps(
    obj: Any,
    *,
    serializer: Serializer | None = None,
    secret: bytes | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Segments:
    """Serialize and frame ``obj``, signed when ``secret`` is given.

    Args:
        obj: The object; do not mutate it until the result has been sent.
        serializer: Defaults to :data:`DEFAULT_SERIALIZER`.
        secret: Shared HMAC key.
        meta: JSON-serialisable metadata for :func:`loads_with_meta`.

    Returns:
        The frame, viewing ``obj``'s large buffers rather than copying them.

    Raises:
        SerializationError: If ``obj`` or ``meta`` cannot be serialized.
        ConfigurationError: If ``secret`` is not non-empty bytes.
    """
    if not meta and type(serializer) in _FAST_SERIALIZERS and type(obj) in _RAW_FRAMES.tags:
        return _RAW_FRAMES.encode(obj, secret)  # the same bytes, ~5x faster
    if not meta and secret is None and type(serializer) in _FAST_ARRAYS and _is_ndarray(obj):
        fast = _ARRAY_FRAMES.encode(obj)  # the same bytes, cached headers
        if fast is not None:
            return fast
    chosen = serializer or DEFAULT_SERIALIZER
    if isinstance(chosen, AutoSerializer):
        chosen = chosen.select(obj)
    try:
        parts = chosen.serialize(obj)
    except FrameworkError:
        raise
    except Exception as exc:  # a user serializer's own error: give it our type
        msg = f"Serializer {chosen.name!r} cannot serialize a {_type_name(obj)}: {exc}"
        raise SerializationError(msg) from exc
    header: dict[str, Any] = {"ser": chosen.name}
    if meta:
        header["meta"] = dict(meta)
    return encode_frame(header, parts, secret=secret)


def loads(
    data: BytesLike | Segments,
    *,
    secret: bytes | None = None,
    allow_pickle: bool = True,
    check_meta: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Return the object of a :func:`dumps` frame; see :func:`loads_with_meta`."""
    if (value := _RAW_FRAMES.decode(data, secret)) is not None:  # fast path, same checks
        if check_meta is not None:
            check_meta({})  # its frames carry no meta
        return value
    if secret is None and (value := _ARRAY_FRAMES.decode(data)) is not None:
        if check_meta is not None:
            check_meta({})
        return value
    return loads_with_meta(data, secret=secret, allow_pickle=allow_pickle, check_meta=check_meta)[1]


def loads_with_meta(
    data: BytesLike | Segments,
    *,
    secret: bytes | None = None,
    allow_pickle: bool = True,
    check_meta: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Verify (when ``secret`` is set), then deserialize a :func:`dumps` frame.

    Out-of-band numpy arrays and memoryviews are views of ``data`` (read-only if
    it is ``bytes``); they keep ``data`` alive.

    Args:
        data: The frame.
        secret: Shared HMAC key: unsigned or mis-signed frames are refused.
        allow_pickle: If false, frames of a serializer that unpickles are refused
            before any deserialization.
        check_meta: Called with the (verified) ``meta`` before anything is
            deserialized; raises to refuse the frame, e.g. one bound to another message.

    Returns:
        The ``meta`` given to :func:`dumps` (``{}`` if none) and the object.

    Raises:
        FramingError: A subclass for a truncated or unknown-version frame; itself
            if the frame is malformed or was not written by :func:`dumps`.
        MissingSignatureError: If ``secret`` is set and the frame is unsigned.
        BadSignatureError: If ``secret`` is set and the MAC does not match.
        DeserializationError: If the serializer is not registered here, pickle is
            not allowed, or the payload is corrupt.
    """
    header, parts = decode_frame(data, secret=secret)
    name, meta = header.get("ser"), header.get("meta", {})
    if type(name) is not str or type(meta) is not dict or len(header) != 1 + ("meta" in header):
        raise FramingError("The frame header is not a dumps() header ('ser' and 'meta').")
    if check_meta is not None:
        check_meta(meta)
    serializer = _registry.get(name)
    if serializer is None:
        raise DeserializationError(f"The frame needs serializer {name!r}: not registered here.")
    if not allow_pickle and getattr(serializer, "unpickles", False):
        msg = f"Refusing serializer {name!r}, which unpickles: allow_pickle is False."
        raise DeserializationError(msg)
    try:
        return meta, serializer.deserialize(parts)
    except FrameworkError:
        raise
    except Exception as exc:  # a user serializer's own error: give it our type
        raise DeserializationError(f"Serializer {name!r} failed: {exc}") from exc

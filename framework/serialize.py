"""Serializers and the object payload format: :func:`dumps` and :func:`loads`.

:func:`dumps` frames an object (see :mod:`framework.framing`) with the header
``{"ser": name, "meta": {...}}`` and the serializer's parts. The default serializer
sends bytes-like objects and ``str`` raw (exact bytes, bytearray and str through a
fast path, the same bytes on the wire) and pickles the rest with cloudpickle, protocol
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

import json
import pickle
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import cloudpickle

from framework.buffers import BytesLike, Segments, byte_view
from framework.exceptions import (
    ConfigurationError,
    DeserializationError,
    FrameworkError,
    FramingError,
    SerializationError,
)
from framework.framing import (
    FRAME_VERSION,
    MAC_BYTES,
    MAX_HEADER_BYTES,
    Frame,
    TaggedFrames,
    decode_frame,
    encode_frame,
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

#: Pickle buffers (numpy arrays...) at least this big travel as separate parts.
OUT_OF_BAND_MIN = 16 * 1024


def _type_name(obj: Any) -> str:
    cls = type(obj)
    module = "" if cls.__module__ == "builtins" else f"{cls.__module__}."
    return module + cls.__qualname__


@runtime_checkable
class Serializer(Protocol):
    """Turns objects into buffers and back; ``name`` is its wire id.

    ``serialize`` returns parts (buffer-protocol objects or :class:`Segments`),
    zero-copy where possible; ``deserialize`` gets memoryviews, possibly
    read-only. They should raise :class:`SerializationError` and
    :class:`DeserializationError`; :func:`dumps`/:func:`loads` wrap other errors.
    A serializer that unpickles sets ``unpickles = True`` so that
    ``loads(..., allow_pickle=False)`` refuses its frames.
    """

    name: str

    def serialize(self, obj: Any) -> list[Any]:
        """Return the parts that encode ``obj``."""

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Rebuild the object from the parts ``serialize`` returned."""


class _ChunkSink:
    """Pickler output that keeps what it is given by reference, copying nothing."""

    # The C pickler passes payloads of 64 KiB or more (bytes, bytearray, buffers)
    # to write() as the objects themselves: keeping them means no copy at all.

    def __init__(self) -> None:
        self.chunks: list[Any] = []

    def write(self, data: Any) -> int:
        if isinstance(data, pickle.PickleBuffer):
            data = data.raw()  # flat bytes in memory order, whatever the buffer's layout
        self.chunks.append(data)
        return memoryview(data).nbytes


class PickleSerializer:
    """cloudpickle with pickle protocol 5 and out-of-band buffers; copies no large buffer.

    Buffers of ``out_of_band_min`` bytes or more (numpy arrays, ``PickleBuffer``)
    become separate parts; large bytes/bytearray values are referenced by the
    pickle-stream part. On load, out-of-band numpy arrays are views of the
    received data: read-only when it is ``bytes``, writable for a ``bytearray``.

    Warning:
        Unpickling runs arbitrary code: see the module docstring.

    Args:
        out_of_band_min: Smaller buffers are copied into the pickle stream.
    """

    name = "pickle"
    unpickles = True

    def __init__(self, *, out_of_band_min: int = OUT_OF_BAND_MIN) -> None:
        self.out_of_band_min = out_of_band_min

    def serialize(self, obj: Any) -> list[Any]:
        """Return the pickle stream, then buffers; raise SerializationError if unpicklable."""
        buffers: list[memoryview] = []

        def keep_in_band(buffer: pickle.PickleBuffer) -> bool:
            view = buffer.raw()
            if view.nbytes < self.out_of_band_min:
                return True  # small arrays: fewer parts beat a tiny copy
            buffers.append(view)
            return False

        sink = _ChunkSink()
        try:
            cloudpickle.Pickler(sink, protocol=5, buffer_callback=keep_in_band).dump(obj)
        except Exception as exc:  # any __reduce__ can fail in any way
            msg = f"Cannot pickle an object of type {_type_name(obj)}: {exc}"
            raise SerializationError(msg) from exc
        return [sink.chunks[0] if len(sink.chunks) == 1 else Segments(sink.chunks), *buffers]

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Unpickle (after the MAC check); raise DeserializationError if corrupt."""
        if not parts:
            raise DeserializationError("A pickle payload needs its pickle-stream part.")
        try:
            # Trust boundary: decode_frame() checked the HMAC when a secret is configured.
            return pickle.loads(parts[0], buffers=parts[1:])  # noqa: S301
        except Exception as exc:  # corrupt streams raise many exception types
            msg = f"The pickle payload is corrupt or refers to code missing here: {exc!r}"
            raise DeserializationError(msg) from exc


class JsonSerializer:
    """Standard JSON (UTF-8, no NaN): tuples come back as lists, dict keys as strings."""

    name = "json"

    def serialize(self, obj: Any) -> list[Any]:
        """Return one JSON part; raise SerializationError for values JSON cannot hold."""
        try:
            text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return [text.encode("utf-8")]
        except (TypeError, ValueError, RecursionError) as exc:
            msg = f"Cannot encode an object of type {_type_name(obj)} as JSON: {exc}"
            raise SerializationError(msg) from exc

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Decode the JSON part; raise DeserializationError if it is invalid."""
        if len(parts) != 1:
            raise DeserializationError(f"A JSON payload has 1 part, not {len(parts)}.")
        try:
            return json.loads(str(parts[0], "utf-8"))
        except (ValueError, RecursionError) as exc:
            raise DeserializationError(f"The JSON payload is invalid: {exc}") from exc


_RAW_TYPES = (bytes, bytearray, memoryview, str)
_RAW_LOADERS: dict[bytes, Any] = {
    b"b": bytes,
    b"a": bytearray,
    b"m": lambda view: view,
    b"s": lambda view: str(view, "utf-8", "surrogatepass"),
}


class RawSerializer:
    """bytes, bytearray, memoryview and str without pickle: a type tag part, then the data.

    bytes, bytearray and str come back as such (one copy), subclasses as their base
    type; str is UTF-8 with ``surrogatepass``. A memoryview comes back as a flat
    unsigned-byte view of the received data (no copy; format and shape are lost).
    """

    name = "raw"

    def serialize(self, obj: Any) -> list[Any]:
        """Return ``[tag, data]``; raise SerializationError if ``obj`` is not bytes-like or str."""
        if isinstance(obj, str):
            return [b"s", obj.encode("utf-8", "surrogatepass")]
        if isinstance(obj, memoryview):
            return [b"m", byte_view(obj if obj.c_contiguous else obj.tobytes())]
        if isinstance(obj, (bytes, bytearray)):
            return [b"a" if isinstance(obj, bytearray) else b"b", byte_view(obj)]
        msg = f"The raw serializer takes bytes-like objects or str, not {_type_name(obj)}."
        raise SerializationError(msg)

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Rebuild the value; raise DeserializationError if tag, parts or UTF-8 are invalid."""
        loader = _RAW_LOADERS.get(bytes(parts[0])) if len(parts) == 2 else None
        if loader is None:
            raise DeserializationError("The raw payload lacks a valid type tag and data part.")
        try:
            return loader(parts[1])
        except UnicodeDecodeError as exc:
            raise DeserializationError(f"The raw str payload is not UTF-8: {exc}") from exc


class AutoSerializer:
    """The default: raw fast path for exact bytes/bytearray/memoryview/str, else ``fallback``.

    :func:`dumps` records the serializer it selects (``"raw"`` or the fallback's
    name), never ``"auto"``, so ``allow_pickle=False`` sees what a frame needs.

    Args:
        fallback: Serializer for other objects; :class:`PickleSerializer` by default.
    """

    name = "auto"

    def __init__(self, *, fallback: Serializer | None = None) -> None:
        self.raw = RawSerializer()
        self.fallback: Serializer = fallback or PickleSerializer()

    def select(self, obj: Any) -> Serializer:
        """Return the serializer for ``obj``."""
        return self.raw if type(obj) in _RAW_TYPES else self.fallback

    def serialize(self, obj: Any) -> list[Any]:
        """Serialize with :meth:`select`; frame the parts under that serializer's name."""
        return self.select(obj).serialize(obj)

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Raise DeserializationError: frames name the serializer selected, never "auto"."""
        raise DeserializationError("No frame is written as 'auto'; frames name 'raw' or 'pickle'.")


#: The serializer :func:`dumps` uses when none is given.
DEFAULT_SERIALIZER = AutoSerializer()

_BUILTINS: dict[str, Serializer] = {
    s.name: s for s in (PickleSerializer(), JsonSerializer(), RawSerializer(), DEFAULT_SERIALIZER)
}
_registry: dict[str, Serializer] = dict(_BUILTINS)
#: Raw frames of exact bytes, bytearray and str (no meta) skip the general framing code.
_RAW_FRAMES = TaggedFrames({"ser": "raw"}, {bytes: b"b", bytearray: b"a", str: b"s"})
_FAST_SERIALIZERS = (type(None), AutoSerializer, RawSerializer)  # they frame those as raw


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
    data: BytesLike | Segments, *, secret: bytes | None = None, allow_pickle: bool = True
) -> Any:
    """Return the object of a :func:`dumps` frame; see :func:`loads_with_meta`."""
    if (value := _RAW_FRAMES.decode(data, secret)) is not None:  # fast path, same checks
        return value
    return loads_with_meta(data, secret=secret, allow_pickle=allow_pickle)[1]


def loads_with_meta(
    data: BytesLike | Segments, *, secret: bytes | None = None, allow_pickle: bool = True
) -> tuple[dict[str, Any], Any]:
    """Verify (when ``secret`` is set), then deserialize a :func:`dumps` frame.

    Out-of-band numpy arrays and memoryviews are views of ``data`` (read-only if
    it is ``bytes``); they keep ``data`` alive.

    Args:
        data: The frame.
        secret: Shared HMAC key: unsigned or mis-signed frames are refused.
        allow_pickle: If false, frames of a serializer that unpickles are refused
            before any deserialization.

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

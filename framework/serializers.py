"""The built-in serializers: pickle (protocol 5, out-of-band buffers), JSON, raw, ndarray, auto.

:mod:`framework.serialize` frames their parts and re-exports them; this module
holds only the object-to-parts conversions (pure, no I/O).

Warning:
    Unpickling runs arbitrary code: see :mod:`framework.serialize`.
"""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from typing import Any, Protocol, runtime_checkable

import cloudpickle
import pydantic_core
from cloudpickle import cloudpickle as _cloudpickle_impl

from framework._ndarrays import (
    HEADER_CACHE_SIZE,
    array_dispatch_table,
    ndarray_header,
    plain_array,
)
from framework.buffers import Segments, byte_view
from framework.exceptions import DeserializationError, SerializationError

__all__ = [
    "OUT_OF_BAND_MIN",
    "AutoSerializer",
    "JsonSerializer",
    "NdarraySerializer",
    "PickleSerializer",
    "RawSerializer",
    "Serializer",
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


#: cloudpickle's modules registered to be pickled by value (the live set, never copied).
_PICKLE_BY_VALUE_MODULES: set[str] = getattr(_cloudpickle_impl, "_PICKLE_BY_VALUE_MODULES", {""})
#: Streams this big are chunks of user data passed by reference, never pickle opcodes.
_OPCODES_MAX = 256 * 1024


def _parts(chunks: list[Any], buffers: list[memoryview]) -> list[Any]:
    """Serializer parts: the pickle stream (one part), then the out-of-band buffers."""
    return [chunks[0] if len(chunks) == 1 else Segments(chunks), *buffers]


def _names_main(chunks: list[Any]) -> bool:
    """Whether a pickle stream may refer to ``__main__`` (by reference, so cloudpickle).

    Global names are short strings inside the pickler's frames, which are ``bytes`` of
    at most ~128 KiB; user payloads passed by reference (other types, or larger) are
    skipped. A payload that merely contains the text errs on the safe side.
    """
    return any(
        type(chunk) is bytes and len(chunk) <= _OPCODES_MAX and b"__main__" in chunk
        for chunk in chunks
    )


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
    """Pickle protocol 5 with out-of-band buffers; copies no large buffer.

    Objects are pickled with the standard C pickler when it succeeds without naming
    ``__main__`` (about 3x faster on small objects), else with cloudpickle, which
    pickles lambdas, local and ``__main__`` classes and functions by value. Both
    write the same protocol, read back with ``pickle.loads``. While a module is
    registered with ``cloudpickle.register_pickle_by_value``, cloudpickle does it all.

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
        if not _PICKLE_BY_VALUE_MODULES:  # else those modules need cloudpickle
            try:
                chunks, buffers = self._dump(pickle.Pickler, obj)
            except Exception:  # noqa: BLE001 - any failure: cloudpickle decides (and reports)
                chunks = None
            if chunks is not None and not _names_main(chunks):
                return _parts(chunks, buffers)
        try:
            chunks, buffers = self._dump(cloudpickle.Pickler, obj)
        except Exception as exc:  # any __reduce__ can fail in any way
            msg = f"Cannot pickle an object of type {_type_name(obj)}: {exc}"
            raise SerializationError(msg) from exc
        return _parts(chunks, buffers)

    def _dump(self, pickler: Any, obj: Any) -> tuple[list[Any], list[memoryview]]:
        """Pickle ``obj`` with ``pickler`` into fresh lists: stream chunks, out-of-band buffers."""
        buffers: list[memoryview] = []

        def keep_in_band(buffer: pickle.PickleBuffer) -> bool:
            view = buffer.raw()
            if view.nbytes < self.out_of_band_min:
                return True  # small arrays: fewer parts beat a tiny copy
            buffers.append(view)
            return False

        sink = _ChunkSink()
        dumper = pickler(sink, protocol=5, buffer_callback=keep_in_band)
        if pickler is pickle.Pickler and (table := array_dispatch_table()) is not None:
            dumper.dispatch_table = table
        dumper.dump(obj)
        return sink.chunks, buffers

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


class NdarraySerializer:
    """Exact numpy arrays of plain dtypes without pickle: a JSON header part, then the data.

    The header holds ``dtype.str`` (byte order included), the shape and the memory
    order ("C" or "F"); the data part views the array's buffer (no copy). On load
    the array is a view of the received data (read-only when it is ``bytes``). The
    header is validated: object, structured and subarray dtypes are refused, and the
    shape must match the data's length. numpy is imported only to load such a frame.
    The auto serializer picks this one for C- or F-contiguous exact ``ndarray``
    objects of dtypes without objects, fields or subarrays; others are pickled.
    """

    name = "ndarray"

    def __init__(self) -> None:
        # Validated header parts (bytes) -> (dtype, shape, order, data length).
        self._headers: dict[bytes, tuple[Any, tuple[int, ...], str, int]] = {}

    def serialize(self, obj: Any) -> list[Any]:
        """Return ``[header, data]``; raise SerializationError for other objects."""
        if not plain_array(obj):
            msg = (
                "The ndarray serializer takes contiguous numpy arrays of plain dtypes, "
                f"not {_type_name(obj)}."
            )
            raise SerializationError(msg)
        order = "C" if obj.flags.c_contiguous else "F"
        header = {"dtype": obj.dtype.str, "shape": obj.shape, "order": order}
        # ravel(order="A") is a flat view in memory order; uint8 exports any dtype (even M8).
        return [pydantic_core.to_json(header), obj.ravel(order="A").view("u1")]

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Rebuild the array as a view of the data; raise DeserializationError if invalid."""
        try:  # numpy is an optional dependency, needed only here
            numpy = sys.modules.get("numpy") or importlib.import_module("numpy")
        except ImportError as exc:
            msg = "The frame holds a numpy array, but numpy is not installed here."
            raise DeserializationError(msg) from exc
        if len(parts) != 2:
            raise DeserializationError(f"An ndarray payload has 2 parts, not {len(parts)}.")
        raw = bytes(parts[0])
        known = self._headers.get(raw)
        if known is None:
            known = self._learn(numpy, raw)
        dtype, shape, order, nbytes = known
        if nbytes != len(parts[1]):
            msg = (
                f"The ndarray header announces {nbytes} bytes of {dtype.str} data, "
                f"but the data part has {len(parts[1])} bytes."
            )
            raise DeserializationError(msg)
        array = numpy.frombuffer(parts[1], dtype=dtype)
        if len(shape) == 1:
            return array
        try:
            return array.reshape(shape, order=order)
        except ValueError as exc:  # e.g. a zero extent beside extents numpy cannot hold
            msg = f"The ndarray header announces shape {list(shape)}, which numpy refuses: {exc}"
            raise DeserializationError(msg) from exc

    def _learn(self, numpy: Any, raw: bytes) -> tuple[Any, tuple[int, ...], str, int]:
        """Validate a header part and cache it (bounded): streams repeat a few headers."""
        dtype, shape, order = ndarray_header(numpy, raw)
        nbytes = dtype.itemsize
        for extent in shape:
            nbytes *= extent
        if len(self._headers) >= HEADER_CACHE_SIZE:
            self._headers.clear()  # many distinct headers: start over rather than track use
        self._headers[raw] = known = (dtype, shape, order, nbytes)
        return known


class AutoSerializer:
    """The default: raw for exact bytes/bytearray/memoryview/str, ndarray, else ``fallback``.

    Exact, contiguous numpy arrays of plain dtypes go through :class:`NdarraySerializer`
    (no pickle). :func:`dumps` records the serializer it selects (``"raw"``,
    ``"ndarray"`` or the fallback's name), never ``"auto"``, so ``allow_pickle=False``
    sees what a frame needs.

    Args:
        fallback: Serializer for other objects; :class:`PickleSerializer` by default.
    """

    name = "auto"

    def __init__(self, *, fallback: Serializer | None = None) -> None:
        self.raw = RawSerializer()
        self.ndarray = NdarraySerializer()
        self.fallback: Serializer = fallback or PickleSerializer()

    def select(self, obj: Any) -> Serializer:
        """Return the serializer for ``obj``."""
        if type(obj) in _RAW_TYPES:
            return self.raw
        return self.ndarray if plain_array(obj) else self.fallback

    def serialize(self, obj: Any) -> list[Any]:
        """Serialize with :meth:`select`; frame the parts under that serializer's name."""
        return self.select(obj).serialize(obj)

    def deserialize(self, parts: list[memoryview]) -> Any:
        """Raise DeserializationError: frames name the serializer selected, never "auto"."""
        raise DeserializationError(
            "No frame is written as 'auto'; frames name the serializer used."
        )

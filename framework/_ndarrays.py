"""numpy arrays without importing numpy: which arrays are plain, how they pickle, their header.

numpy stays an optional dependency: these helpers look at it only once some code has
imported it. :mod:`framework.serializers` uses them in two places: its
:class:`~framework.serializers.NdarraySerializer` sends plain arrays as a JSON header and
their buffer, validated here on the way back in; its
:class:`~framework.serializers.PickleSerializer` pickles arrays with
:func:`array_dispatch_table`, which names a plain dtype by its string (pure, no I/O).
"""

from __future__ import annotations

import copyreg
import functools
import pickle
import sys
from typing import Any

import pydantic_core

from framework.exceptions import DeserializationError

__all__ = ["HEADER_CACHE_SIZE", "array_dispatch_table", "ndarray_header", "plain_array"]

#: numpy refuses arrays with more dimensions (NPY_MAXDIMS in numpy 2).
_MAX_DIMS = 64
#: Distinct ndarray header parts whose validation
#: :class:`~framework.serializers.NdarraySerializer` remembers; also bounds the dtype
#: strings kept for pickling.
HEADER_CACHE_SIZE = 1024


def _plain_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` is one non-empty scalar type: no objects, fields or subarrays."""
    return (
        not dtype.hasobject
        and dtype.names is None
        and dtype.subdtype is None
        and dtype.itemsize > 0
    )


def plain_array(obj: Any) -> bool:
    """Whether ``obj`` is an exact, contiguous ``numpy.ndarray`` of a plain dtype.

    numpy is only looked at if some code already imported it: it stays optional.
    """
    numpy = sys.modules.get("numpy")
    if numpy is None or type(obj) is not numpy.ndarray:
        return False
    flags = obj.flags
    return (flags.c_contiguous or flags.f_contiguous) and _plain_dtype(obj.dtype)


#: Per plain dtype without metadata seen: its short string (bounded).
_DTYPE_TEXTS: dict[Any, str | None] = {}


def _dtype_text(dtype: Any) -> str | None:
    """``dtype.str`` (``'<f8'``) if it rebuilds ``dtype`` (as numpy's pickle does), else None."""
    if dtype.metadata is not None:
        return None  # equal to the dtype without it: never a cache key; numpy pickles it
    try:
        return _DTYPE_TEXTS[dtype]
    except KeyError:
        pass
    text = dtype.str if _plain_dtype(dtype) else None
    if len(_DTYPE_TEXTS) >= HEADER_CACHE_SIZE:
        _DTYPE_TEXTS.clear()
    _DTYPE_TEXTS[dtype] = text
    return text


def _reduce_array(array: Any) -> Any:
    """Reduce an ndarray as numpy does for protocol 5, but name a plain dtype by its string.

    numpy pickles the dtype as an object (a reduction of its class through Python code,
    then its state): more than the data of a small array costs, on both ends. Its
    ``_frombuffer`` takes the dtype's string just as well, so the stream still needs only
    numpy to load. Arrays that numpy would not pickle by buffer (non-contiguous, objects,
    empty items, dtypes the buffer protocol cannot describe) and dtypes that a string does
    not name exactly get numpy's reduction.
    """
    flags = array.flags
    text = _dtype_text(array.dtype)
    if text is None or not (flags.c_contiguous or flags.f_contiguous):
        return array.__reduce_ex__(5)
    try:
        buffer = pickle.PickleBuffer(array)
    except (ValueError, TypeError, BufferError):  # e.g. datetimes: no buffer format for them
        return array.__reduce_ex__(5)
    order = "F" if flags.f_contiguous and not flags.c_contiguous else "C"
    return _frombuffer(), (buffer, text, array.shape, order)


@functools.cache
def _frombuffer() -> Any:
    """The reconstructor numpy names in its protocol-5 reductions (its module varies)."""
    return sys.modules["numpy"].zeros(1).__reduce_ex__(5)[0]


def array_dispatch_table() -> dict[Any, Any] | None:
    """The copyreg reducers plus :func:`_reduce_array` for exact ndarrays, if numpy is loaded."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    # Copied each time: a reducer registered with copyreg later must still apply.
    return {**copyreg.dispatch_table, numpy.ndarray: _reduce_array}


def ndarray_header(numpy: Any, raw: bytes) -> tuple[Any, tuple[int, ...], str]:
    """Validate an ndarray header part: ``(dtype, shape, order)``; never unpickles."""
    try:
        head = pydantic_core.from_json(raw)
    except ValueError as exc:
        raise DeserializationError(f"The ndarray header is not JSON: {exc}.") from exc
    if type(head) is not dict or len(head) != 3:
        head = {}
    text, shape, order = head.get("dtype"), head.get("shape"), head.get("order")
    if (
        type(text) is not str
        or order not in ("C", "F")
        or type(shape) is not list
        or len(shape) > _MAX_DIMS
        or not all(type(n) is int and n >= 0 for n in shape)
    ):
        raise DeserializationError(f"The ndarray header is malformed: {raw[:200]!r}.")
    try:
        dtype = numpy.dtype(text)
    except (TypeError, ValueError) as exc:
        raise DeserializationError(f"The ndarray header names an invalid dtype {text!r}.") from exc
    if not _plain_dtype(dtype):
        msg = f"The ndarray header names dtype {text!r}: only plain scalar dtypes are accepted."
        raise DeserializationError(msg)
    return dtype, tuple(shape), order

"""PickleSerializer (the C pickler first, cloudpickle where needed) and NdarraySerializer."""

from __future__ import annotations

import json
import sys
from typing import Any

import cloudpickle
import numpy as np
import pytest

from framework import serializers
from framework.exceptions import BadSignatureError, DeserializationError, SerializationError
from framework.serialize import dumps, encode_frame, loads
from framework.serializers import NdarraySerializer, PickleSerializer

MB = 1024 * 1024


class _NoCloudpickle:
    """Stands in for ``cloudpickle.Pickler`` to prove the stdlib pickler did the work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("cloudpickle was used")


class _FailsOnce:
    """Unpicklable by the standard pickler (a lambda inside), fine for cloudpickle."""

    def __init__(self) -> None:
        self.array = np.arange(MB // 8, dtype=np.float64)  # out of band
        self.fn = lambda x: x + 1


def _local_class() -> type:
    class Local:
        def __init__(self) -> None:
            self.value = 42

    return Local


@pytest.mark.parametrize(
    "obj",
    [np.full(128, 7.0), {"a": [1, 2.5, "x"], "b": (None, True)}, np.ones(MB // 8), 12345],
)
def test_importable_objects_use_the_standard_pickler(monkeypatch, obj: Any) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    back = loads(dumps(obj, serializer=PickleSerializer()))
    if isinstance(obj, np.ndarray):
        np.testing.assert_array_equal(back, obj)
    else:
        assert back == obj


def test_lambdas_and_local_classes_fall_back_to_cloudpickle() -> None:
    fn = loads(dumps(lambda x: x * 3, serializer=PickleSerializer()))
    assert fn(2) == 6
    local = loads(dumps(_local_class()(), serializer=PickleSerializer()))
    assert local.value == 42


def test_a_failed_standard_attempt_leaves_no_partial_state() -> None:
    # The standard pickler emits the array out of band, then fails on the lambda: the
    # cloudpickle retry must start from fresh buffers (exactly one out-of-band part).
    obj = _FailsOnce()
    parts = PickleSerializer().serialize(obj)
    assert len(parts) == 2
    assert memoryview(parts[1]).nbytes == MB
    back = loads(dumps(obj, serializer=PickleSerializer()))
    np.testing.assert_array_equal(back.array, obj.array)
    assert back.fn(1) == 2


def test_main_classes_are_pickled_by_value(monkeypatch) -> None:
    main = sys.modules["__main__"]
    cls = type("FwMainOnly", (), {"__module__": "__main__", "value": 7})
    monkeypatch.setattr(main, "FwMainOnly", cls, raising=False)
    frame = dumps(cls(), serializer=PickleSerializer())
    monkeypatch.delattr(main, "FwMainOnly")
    # By reference, loading would need __main__.FwMainOnly (absent in other processes).
    back = loads(frame)
    assert type(back).__name__ == "FwMainOnly"
    assert back.value == 7


def test_pickle_by_value_modules_always_use_cloudpickle(monkeypatch) -> None:
    monkeypatch.setattr(serializers, "_PICKLE_BY_VALUE_MODULES", {"some_module"})
    calls: list[int] = []
    real = cloudpickle.Pickler

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(serializers.cloudpickle, "Pickler", counting)
    assert loads(dumps([1, 2], serializer=PickleSerializer())) == [1, 2]
    assert calls == [1]


def test_truly_unpicklable_objects_still_raise_serialization_error() -> None:
    import threading

    with pytest.raises(SerializationError, match="lock"):
        PickleSerializer().serialize(threading.Lock())


def test_text_main_in_a_large_payload_does_not_force_cloudpickle(monkeypatch) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    payload = b"__main__" * (MB // 8)  # passed to the sink by reference: not scanned
    assert loads(dumps([payload], serializer=PickleSerializer())) == [payload]


def _ser(data: bytes) -> str:
    return str(json.loads(data[4 : 4 + int.from_bytes(data[:4], "big")])["h"]["ser"])


@pytest.mark.parametrize(
    "array",
    [
        np.arange(128, dtype=np.float64),
        np.arange(24, dtype=np.int16).reshape(2, 3, 4),
        np.asfortranarray(np.arange(12, dtype=np.complex64).reshape(3, 4)),
        np.array(3.5),  # 0-d
        np.zeros((0, 3), dtype=np.uint8),  # empty
        np.arange(10, dtype=">i4"),  # non-native byte order
        np.array([True, False]),
        np.array(["ab", "cde"]),  # <U3
        np.array([b"x", b"yz"]),  # |S2
        np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"),
        np.arange(5, dtype="timedelta64[s]"),
        np.ones(20_000, dtype=np.float32),
    ],
)
def test_plain_arrays_skip_pickle(array: np.ndarray) -> None:
    data = dumps(array).join()
    assert _ser(data) == "ndarray"
    back = loads(data, allow_pickle=False)  # no pickle involved at all
    assert type(back) is np.ndarray
    assert (back.dtype, back.shape) == (array.dtype, array.shape)
    assert back.flags.f_contiguous == array.flags.f_contiguous
    assert back.flags.c_contiguous == array.flags.c_contiguous
    np.testing.assert_array_equal(back, array)
    assert not back.flags.writeable  # a view of the bytes received
    assert np.shares_memory(back, np.frombuffer(data, np.uint8)) or array.nbytes == 0
    assert loads(bytearray(data)).flags.writeable


def test_signed_array_frames_keep_their_mac() -> None:
    array = np.arange(100, dtype=np.float64)
    data = bytearray(dumps(array, secret=b"k" * 32).join())
    np.testing.assert_array_equal(loads(bytes(data), secret=b"k" * 32), array)
    data[-40] ^= 1  # inside the array data
    with pytest.raises(BadSignatureError):
        loads(bytes(data), secret=b"k" * 32)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(20, dtype=np.float64)[::2],  # not contiguous
        np.zeros(3, dtype=[("a", "<i4"), ("b", ">f8")]),  # structured
        np.array([1, "two", None], dtype=object),
        np.zeros(2, dtype="(2,3)f8"),  # subarray dtype: numpy makes it shape (2, 2, 3)
        np.ma.masked_array([1.0, 2.0], mask=[False, True]),  # a subclass
    ],
)
def test_other_arrays_are_pickled(array: np.ndarray) -> None:
    data = dumps(array).join()
    expected = "ndarray" if array.dtype.names is None and not array.dtype.hasobject else "pickle"
    if type(array) is not np.ndarray or not array.flags.forc:
        expected = "pickle"
    assert _ser(data) == expected
    back = loads(data)
    assert type(back) is type(array)
    np.testing.assert_array_equal(back, array)


def test_the_ndarray_serializer_refuses_other_objects() -> None:
    with pytest.raises(SerializationError, match="ndarray serializer"):
        NdarraySerializer().serialize([1, 2])


def _frame(header: Any, data: bytes = bytes(16)) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return encode_frame({"ser": "ndarray"}, [raw, data]).join()


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"dtype": "<f8", "shape": [3], "order": "C"}, "announces 24 bytes"),
        ({"dtype": "<f8", "shape": [2, 2], "order": "C"}, "announces 32 bytes"),
        ({"dtype": "|O", "shape": [2], "order": "C"}, "plain scalar dtypes"),
        ({"dtype": "[('a', '<i4')]", "shape": [4], "order": "C"}, "invalid dtype|plain scalar"),
        ({"dtype": "i4,i4", "shape": [2], "order": "C"}, "plain scalar dtypes"),
        ({"dtype": "(2,)f8", "shape": [1], "order": "C"}, "plain scalar dtypes"),
        ({"dtype": "no-such-type", "shape": [2], "order": "C"}, "invalid dtype"),
        ({"dtype": "<f8", "shape": [-2], "order": "C"}, "malformed"),
        ({"dtype": "<f8", "shape": [2], "order": "X"}, "malformed"),
        ({"dtype": "<f8", "shape": 2, "order": "C"}, "malformed"),
        ({"dtype": "<f8", "shape": [2], "order": "C", "x": 1}, "malformed"),
        ({"dtype": "<f8", "shape": [1] * 65, "order": "C"}, "malformed"),
        ([1, 2, 3], "malformed"),
        (b"{not json", "not JSON"),
    ],
)
def test_tampered_array_headers_are_refused(header: Any, match: str) -> None:
    with pytest.raises(DeserializationError, match=match):
        loads(_frame(header))


def test_an_array_frame_needs_two_parts() -> None:
    with pytest.raises(DeserializationError, match="2 parts"):
        loads(encode_frame({"ser": "ndarray"}, [b"{}"]).join())


def test_loading_an_array_without_numpy_is_a_clear_error(monkeypatch) -> None:
    data = dumps(np.arange(4)).join()
    monkeypatch.setitem(sys.modules, "numpy", None)  # import numpy now fails
    with pytest.raises(DeserializationError, match="numpy is not installed"):
        loads(data)
    assert loads(dumps(b"abc").join()) == b"abc"  # numpy-free paths still work


@pytest.mark.parametrize(
    "array",
    [
        np.arange(1024, dtype=np.uint8),
        np.arange(6, dtype=">f8").reshape(2, 3),  # big-endian
        np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
        np.array(3.5),  # 0-d
        np.zeros((0, 4), dtype=np.int16),
        np.array(["ab", "héé"], dtype="<U3"),
        np.array([True, False]),
    ],
)
def test_arrays_inside_pickles_name_a_plain_dtype_by_its_string(
    monkeypatch, array: np.ndarray
) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    stream, *_ = PickleSerializer().serialize({"a": array, "same": array})
    assert b"dtype" not in bytes(stream)  # numpy would pickle the dtype object
    back = loads(dumps({"a": array}, serializer=PickleSerializer()))["a"]
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.flags.f_contiguous == array.flags.f_contiguous
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize(
    "array",
    [
        np.array(["2024-01-02T03:04:05"], dtype="datetime64[ns]"),  # no buffer format
        np.zeros(2, dtype=np.dtype(np.float64, metadata={"unit": "m"})),
        np.arange(10.0)[::2],  # not contiguous
        np.zeros(2, dtype=[("a", "<i4")]),
    ],
)
def test_arrays_a_dtype_string_would_not_rebuild_are_pickled_by_numpy(
    monkeypatch, array: np.ndarray
) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    stream, *_ = PickleSerializer().serialize([array])
    assert b"dtype" in bytes(stream)
    (back,) = loads(dumps([array], serializer=PickleSerializer()))
    assert back.dtype == array.dtype
    assert back.dtype.char == array.dtype.char
    assert back.dtype.metadata == array.dtype.metadata
    np.testing.assert_array_equal(back, array)


def test_large_arrays_inside_pickles_stay_out_of_band_views() -> None:
    array = np.arange(MB // 8, dtype=np.float64)
    _, buffer = PickleSerializer().serialize({"a": array})
    assert np.shares_memory(np.frombuffer(buffer, dtype=np.float64), array)
    back = loads(bytearray(dumps({"a": array}, serializer=PickleSerializer()).join()))["a"]
    assert back.flags.writeable
    np.testing.assert_array_equal(back, array)


class _Registered:
    def __init__(self, value: int) -> None:
        self.value = value


def test_reducers_registered_with_copyreg_later_still_apply(monkeypatch) -> None:
    import copyreg

    monkeypatch.setitem(copyreg.dispatch_table, _Registered, lambda obj: (int, (obj.value,)))
    back = loads(dumps([_Registered(7), np.arange(3)], serializer=PickleSerializer()))
    assert back[0] == 7
    np.testing.assert_array_equal(back[1], np.arange(3))

"""The cached numpy fast path of dumps/loads writes and reads exactly what the general path does."""

from __future__ import annotations

import numpy as np
import pydantic_core
import pytest

import framework.serialize as S
from framework.exceptions import BadSignatureError, DeserializationError, FramingError
from framework.framing import encode_frame

ARRAYS = [
    np.arange(128.0),
    np.arange(12).reshape(3, 4),
    np.asfortranarray(np.arange(12).reshape(3, 4)),
    np.array(5),
    np.zeros((0, 3)),
    np.zeros(200_000, np.uint8),
    np.array(["ab", "c"]),
    np.arange(3, dtype=">i4"),
    np.array(["2020-01-01"], dtype="M8[D]"),
    np.zeros(3, dtype="V8"),
    np.ones((2, 3), dtype=np.complex64).T,
    np.array([True, False]),
]


def _general(array: np.ndarray) -> bytes:
    parts = S.DEFAULT_SERIALIZER.ndarray.serialize(array)
    return encode_frame({"ser": "ndarray"}, parts).join()


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype.str}{a.shape}")
def test_fast_frames_are_the_general_frames_and_round_trip(array: np.ndarray) -> None:
    for _ in range(2):  # the second pass hits the caches
        frame = S.dumps(array)
        data = frame.join()
        assert data == _general(array)
        assert b"".join(frame.parts) == data
        for source in (data, bytearray(data)):
            back = S.loads(source)
            assert back.dtype == array.dtype
            assert back.shape == array.shape
            assert np.array_equal(back, array)


def test_arrays_outside_the_fast_path_still_round_trip() -> None:
    structured = np.zeros(3, dtype=[("a", "<f4"), ("b", "<f4")])
    assert S.loads(S.dumps(structured).join()).dtype == structured.dtype
    strided = np.arange(10)[::2]
    assert np.array_equal(S.loads(S.dumps(strided).join()), strided)
    objects = np.array([1, "a"], dtype=object)
    assert list(S.loads(S.dumps(objects).join())) == [1, "a"]


def test_signed_arrays_are_verified() -> None:
    secret = b"k" * 32
    array = np.arange(5.0)
    data = bytearray(S.dumps(array, secret=secret).join())
    assert np.array_equal(S.loads(bytes(data), secret=secret), array)
    data[-40] ^= 1  # a data byte, before the 32-byte MAC
    with pytest.raises(BadSignatureError):
        S.loads(bytes(data), secret=secret)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-1],
        lambda d: d + b"x",
        lambda d: d.replace(b'"<f8"', b'"|O8"'),
        lambda d: d.replace(b'"<f8"', b'"<c16"'),
    ],
    ids=["truncated", "extended", "object-dtype", "size-mismatch"],
)
def test_mangled_fast_frames_are_rejected(mangle) -> None:
    data = S.dumps(np.arange(4.0)).join()
    S.loads(data)  # warm the cache with the good frame
    with pytest.raises((FramingError, DeserializationError)):
        S.loads(mangle(data))


@pytest.mark.parametrize(
    "shape", [[0, 2**70], [0, 2**62, 2**62]], ids=["dimension-too-big", "array-too-big"]
)
def test_forged_empty_shapes_raise_a_framework_error(shape: list[int]) -> None:
    # No data, so the size check passes, but numpy refuses the shape: as bytes (the fast
    # path, as a store reads values) a raw ValueError escaped, which the stream consumer
    # took for a transient failure and retried forever.
    header = pydantic_core.to_json({"dtype": "<f8", "shape": shape, "order": "C"})
    data = encode_frame({"ser": "ndarray"}, [header, b""]).join()
    for source in (data, memoryview(data)):
        with pytest.raises(DeserializationError, match="shape"):
            S.loads(source)

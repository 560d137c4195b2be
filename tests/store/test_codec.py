from __future__ import annotations

import pytest

from framework.exceptions import BadSignatureError, DeserializationError
from framework.serialize import dumps, loads
from framework.store.codec import FAST_MAX_BYTES, PREFIX_CACHE_SIZE, FrameCodec


@pytest.mark.parametrize("size", [0, 1, 1024, FAST_MAX_BYTES])
def test_fast_frames_are_byte_identical_to_dumps(size: int) -> None:
    codec = FrameCodec()
    first, second = b"\x01" * size, b"\x02" * size
    assert codec.encode(first).join() == dumps(first).join()  # learns the prefix
    fast = codec.encode(second).join()
    assert fast == dumps(second).join()
    assert loads(fast) == second
    decoded = codec.decode(fast)
    assert type(decoded) is bytes
    assert decoded == second


@pytest.mark.parametrize(
    "obj", ["text", bytearray(b"ba"), memoryview(b"mv"), b"x" * (FAST_MAX_BYTES + 1), {"a": 1}]
)
def test_other_objects_take_the_general_path(obj: object) -> None:
    codec = FrameCodec()
    for _ in range(2):
        frame = codec.encode(obj).join()
        assert frame == dumps(obj).join()
        assert codec.decode(frame) == loads(frame)


def test_frames_from_other_writers_decode_the_same() -> None:
    codec = FrameCodec()
    codec.encode(b"abc")
    assert codec.decode(dumps(b"xyz").join()) == b"xyz"
    assert codec.decode(dumps("xyz").join()) == "xyz"  # same length, other prefix
    assert codec.decode(bytearray(dumps(b"xyz").join())) == b"xyz"


def test_signed_codec_never_takes_the_fast_path() -> None:
    codec = FrameCodec(secret=b"s" * 32)
    codec.encode(b"abc")
    frame = codec.encode(b"abd").join()
    assert loads(frame, secret=b"s" * 32) == b"abd"
    tampered = bytearray(frame)
    tampered[-33] ^= 1
    with pytest.raises(BadSignatureError):
        codec.decode(bytes(tampered))


def test_json_codec_refuses_pickle() -> None:
    codec = FrameCodec("json")
    with pytest.raises(DeserializationError, match="allow_pickle"):
        codec.decode(dumps({1, 2}).join())


def test_prefix_cache_is_bounded() -> None:
    codec = FrameCodec()
    for size in range(PREFIX_CACHE_SIZE + 10):
        codec.encode(bytes(size))
    assert len(codec._by_length) <= PREFIX_CACHE_SIZE
    assert codec.decode(codec.encode(b"q" * 5).join()) == b"q" * 5

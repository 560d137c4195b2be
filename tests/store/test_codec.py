from __future__ import annotations

import pytest

from framework.exceptions import (
    BadSignatureError,
    ConfigurationError,
    DeserializationError,
    MissingSignatureError,
)
from framework.serialize import dumps, get_serializer, loads
from framework.store.codec import FrameCodec

SECRET = b"s" * 32


@pytest.mark.parametrize(
    "obj",
    [b"", b"\x01" * 1024, b"x" * 70_000, "text", bytearray(b"ba"), memoryview(b"mv"), {"a": 1}],
)
def test_frames_are_what_dumps_writes_and_loads_reads(obj: object) -> None:
    codec = FrameCodec()
    for _ in range(2):
        frame = codec.encode(obj).join()
        assert frame == dumps(obj).join()
        assert codec.decode(frame) == loads(frame)
        assert type(codec.decode(frame)) is type(loads(frame))


def test_frames_from_other_writers_decode_the_same() -> None:
    codec = FrameCodec()
    codec.encode(b"abc")
    assert codec.decode(dumps(b"xyz").join()) == b"xyz"
    assert codec.decode(dumps("xyz").join()) == "xyz"  # same length, other tag
    assert codec.decode(bytearray(dumps(b"xyz").join())) == b"xyz"


def test_signed_codec_signs_and_verifies() -> None:
    codec = FrameCodec(secret=SECRET)
    frame = codec.encode(b"abd").join()
    assert frame == dumps(b"abd", secret=SECRET).join()
    assert loads(frame, secret=SECRET) == b"abd"
    assert codec.decode(frame) == b"abd"
    tampered = bytearray(frame)
    tampered[-33] ^= 1
    with pytest.raises(BadSignatureError):
        codec.decode(bytes(tampered))
    with pytest.raises(MissingSignatureError):
        codec.decode(dumps(b"abd").join())


def test_a_frame_signed_with_the_secret_for_another_purpose_is_refused() -> None:
    """A store never writes ``meta``; other users of a shared secret always do."""
    codec = FrameCodec(secret=SECRET)
    message = dumps({"amount": 10**6}, secret=SECRET, meta={"kind": "data", "seq": 0}).join()
    for uid in (None, "a" * 32):  # a plugin store's read, a RedisStore's fallback
        with pytest.raises(BadSignatureError, match="signed for another purpose"):
            codec.decode(message, uid)
        assert codec.decode(dumps({"amount": 1}, secret=SECRET).join(), uid) == {"amount": 1}
    raw = dumps(b"raw", secret=SECRET, meta={"kind": "data"}).join()  # not the fast path
    with pytest.raises(BadSignatureError, match="signed for another purpose"):
        codec.decode(raw)


def test_a_reader_refusing_pickle_overrides_the_store_serializer() -> None:
    codec = FrameCodec("auto")
    assert codec.decode(codec.encode({"a": 1}).join()) == {"a": 1}
    with pytest.raises(DeserializationError, match="allow_pickle"):
        codec.decode(codec.encode({"a": 1}).join(), allow_pickle=False)
    assert codec.decode(codec.encode(b"raw").join(), allow_pickle=False) == b"raw"


def test_json_codec_refuses_pickle() -> None:
    codec = FrameCodec("json")
    assert codec.serializer is get_serializer("json")
    assert not codec.allow_pickle
    with pytest.raises(DeserializationError, match="allow_pickle"):
        codec.decode(dumps({1, 2}).join())


def test_unknown_serializer_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        FrameCodec("no-such-serializer")

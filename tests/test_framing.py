from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.buffers import Segments
from framework.exceptions import BadSignatureError, ConfigurationError
from framework.framing import (
    JOIN_MAX,
    MAC_BYTES,
    PREFIX_CACHE_SIZE,
    TaggedFrames,
    decode_frame,
    encode_frame,
)

SECRET = b"k" * 32
HEADER = {"kind": "ünï", "n": 1}
TAGS = {bytes: b"b", bytearray: b"a", str: b"s"}
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
values = st.binary(max_size=3000) | st.binary(max_size=40).map(bytearray) | st.text(max_size=500)
secrets_ = st.none() | st.just(SECRET)


def general(value: bytes | bytearray | str, secret: bytes | None) -> Segments:
    payload = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return encode_frame(HEADER, [TAGS[type(value)], payload], secret=secret)


@FAST
@given(value=values, secret=secrets_)
def test_encode_writes_the_general_frame_and_decode_reads_it(value, secret) -> None:
    frames = TaggedFrames(HEADER, TAGS)
    for _ in range(2):  # the first call encodes and caches the prefix, the second reuses it
        fast, slow = frames.encode(value, secret), general(value, secret)
        assert fast.join() == slow.join()
        assert [len(p) for p in fast.parts] == [len(p) for p in slow.parts]
        assert fast.nbytes == slow.nbytes
        for data in (fast.join(), bytearray(fast.join()), memoryview(b"xx" + fast.join())[2:]):
            result = frames.decode(data, secret)
            assert type(result) is type(value)
            assert result == value


def test_a_fresh_decoder_learns_prefixes_from_the_data() -> None:
    data = TaggedFrames(HEADER, TAGS).encode(b"abc").join()
    assert TaggedFrames(HEADER, TAGS).decode(data) == b"abc"


@pytest.mark.parametrize("secret", [None, SECRET])
def test_small_frames_are_one_bytes_and_large_ones_view_the_payload(secret) -> None:
    frames = TaggedFrames(HEADER, TAGS)
    small = frames.encode(bytearray(b"abc"), secret)
    assert small.join() is small.join()  # built once, never copied again
    large_payload = bytearray(JOIN_MAX + 1)
    large = frames.encode(large_payload, secret)
    assert large.parts[2].obj is large_payload
    for frame, value in ((small, b"abc"), (large, large_payload)):
        assert frame.join() == general(bytearray(value), secret).join()
        assert [len(p) for p in frame.parts] == [len(p) for p in general(value, secret).parts]
        assert len(frame.parts[-1]) == (MAC_BYTES if secret else len(value))
        assert frames.decode(frame.join(), secret) == value


@pytest.mark.parametrize(
    "data",
    [
        encode_frame(HEADER, [b"b", b"abc", b""]).join(),  # three parts
        encode_frame(HEADER, [b"bb", b"abc"]).join(),  # two-byte tag
        encode_frame(HEADER, [b"m", b"abc"]).join(),  # unknown tag
        encode_frame({"other": 1}, [b"b", b"abc"]).join(),
        encode_frame({**HEADER, "more": 1}, [b"b", b"abc"]).join(),
        encode_frame(HEADER, [b"s", b"\xff"]).join(),  # not UTF-8
        encode_frame(HEADER, [b"b", b"abc"]).join() + b"\0",
        encode_frame(HEADER, [b"b", b"abc"]).join()[:-1],
        encode_frame(HEADER, [b"b", b"abc"], secret=SECRET).join(),  # signed, no secret given
        b"",
        b"\0\0\0",
        b"\xff" * 64,
    ],
)
def test_decode_declines_other_or_broken_frames(data: bytes) -> None:
    assert TaggedFrames(HEADER, TAGS).decode(data) is None


def test_decode_declines_what_it_cannot_examine() -> None:
    frames = TaggedFrames(HEADER, TAGS)
    data = frames.encode(b"abcd").join()
    assert frames.decode(frames.encode(b"abcd")) is None  # Segments: the general path joins
    assert frames.decode(memoryview(data).cast("c")) is None
    assert frames.decode(memoryview(data + data)[::2]) is None
    assert frames.decode(data.decode("latin-1")) is None


def test_signed_frames_are_verified() -> None:
    frames = TaggedFrames(HEADER, TAGS)
    data = frames.encode(b"payload", SECRET).join()
    assert frames.decode(data, SECRET) == b"payload"
    assert frames.decode(frames.encode(b"payload").join(), SECRET) is None  # unsigned
    for index in (len(data) - MAC_BYTES - 1, len(data) - 1):  # payload, MAC
        tampered = bytearray(data)
        tampered[index] ^= 1
        with pytest.raises(BadSignatureError):
            frames.decode(bytes(tampered), SECRET)
    with pytest.raises(BadSignatureError):
        frames.decode(data, b"other secret")
    with pytest.raises(ConfigurationError):
        frames.decode(data, b"")
    with pytest.raises(ConfigurationError):
        frames.encode(b"payload", b"")


def padded(data: bytes) -> bytes:
    """The same frame with a space before its JSON header: valid, but not byte-identical."""
    size = int.from_bytes(data[:4], "big")
    return (size + 1).to_bytes(4, "big") + b" " + data[4:]


def test_frames_that_differ_in_any_byte_are_declined() -> None:
    frames = TaggedFrames(HEADER, TAGS)
    data = general(b"abc", None).join()
    assert decode_frame(padded(data)).parts[1] == b"abc"
    liar = bytearray(data)
    liar[3] -= 1  # the header length is one short
    for _ in range(2):  # before and after the real frame's prefix is cached
        assert frames.decode(padded(data)) is None
        assert frames.decode(bytes(liar)) is None
        assert frames.decode(data) == b"abc"


def test_the_prefix_cache_is_bounded() -> None:
    frames = TaggedFrames(HEADER, TAGS)
    for size in range(PREFIX_CACHE_SIZE + 10):
        frames.encode(bytes(size))
    assert all(len(cache) <= PREFIX_CACHE_SIZE for cache in frames._by_length)
    assert all(len(cache) <= PREFIX_CACHE_SIZE for cache in frames._by_total)
    assert frames.decode(frames.encode(b"q" * 5).join()) == b"q" * 5


def test_unknown_value_types_raise_key_error() -> None:
    with pytest.raises(KeyError):
        TaggedFrames(HEADER, TAGS).encode(memoryview(b"x"))  # type: ignore[arg-type]


def test_decoded_frames_match_decode_frame() -> None:
    frames = TaggedFrames(HEADER, TAGS)
    data = frames.encode("é→🐍", SECRET).join()
    header, parts = decode_frame(data, secret=SECRET)
    assert header == HEADER
    assert [bytes(p) for p in parts] == [b"s", "é→🐍".encode()]
    assert frames.decode(data, SECRET) == "é→🐍"

from __future__ import annotations

import contextlib
import json
import struct
import threading
import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework import serialize as serialize_module
from framework.buffers import Segments
from framework.exceptions import (
    BadSignatureError,
    ConfigurationError,
    DeserializationError,
    FrameworkError,
    FramingError,
    MissingSignatureError,
    SecurityError,
    SerializationError,
    TruncatedFrameError,
    UnsupportedVersionError,
)
from framework.serialize import (
    DEFAULT_SERIALIZER,
    MAC_BYTES,
    MAX_HEADER_BYTES,
    AutoSerializer,
    Frame,
    JsonSerializer,
    PickleSerializer,
    RawSerializer,
    Serializer,
    decode_frame,
    dumps,
    encode_frame,
    get_serializer,
    loads,
    loads_with_meta,
    register_serializer,
    unregister_serializer,
)

SECRET = b"s" * 32
MB = 1024 * 1024
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
    max_leaves=12,
)
headers = st.dictionaries(st.text(), json_values, max_size=5)
parts_lists = st.lists(st.binary(max_size=300), max_size=12)
secrets_ = st.none() | st.binary(min_size=1, max_size=64)
picklables = st.recursive(
    json_scalars | st.binary() | st.complex_numbers(allow_nan=False),
    lambda kids: (
        st.lists(kids, max_size=4)
        | st.tuples(kids, kids)
        | st.frozensets(st.integers() | st.text(), max_size=4)
        | st.dictionaries(st.text() | st.integers(), kids, max_size=4)
    ),
    max_leaves=12,
)


def raw_frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack(">I", len(encoded)) + encoded + body


# --- framing -----------------------------------------------------------------------------


@FAST
@given(header=headers, parts=parts_lists, secret=secrets_, as_bytearray=st.booleans())
def test_frame_round_trip(header, parts, secret, as_bytearray) -> None:
    data = encode_frame(header, parts, secret=secret).join()
    frame = decode_frame(bytearray(data) if as_bytearray else data, secret=secret)
    assert isinstance(frame, Frame)
    assert frame.header == header
    assert [bytes(p) for p in frame.parts] == parts
    assert all(p.readonly is not as_bytearray for p in frame.parts)


@FAST
@given(header=headers, parts=parts_lists, secret=secrets_)
def test_every_truncation_raises_truncated_frame_error(header, parts, secret) -> None:
    data = encode_frame(header, parts, secret=secret).join()
    for cut in range(len(data)):
        with pytest.raises(TruncatedFrameError):
            decode_frame(data[:cut], secret=secret)


@FAST
@given(obj=picklables, secret=secrets_)
def test_every_truncation_of_a_dumps_frame_raises_truncated(obj, secret) -> None:
    data = dumps(obj, secret=secret).join()
    for cut in range(len(data)):
        with pytest.raises(TruncatedFrameError):
            loads(data[:cut], secret=secret)


@FAST
@given(data=st.binary(max_size=200), secret=secrets_)
def test_arbitrary_bytes_only_raise_framing_or_security_errors(data, secret) -> None:
    with contextlib.suppress(FramingError, SecurityError):
        decode_frame(data, secret=secret)


def test_many_parts_empty_parts_and_segments_parts() -> None:
    parts: list[Any] = [b"", b"x" * 70_000, Segments([b"ab", b"", b"cd"]), *([b"p"] * 1000), b""]
    frame = decode_frame(encode_frame({"k": "ünïcödé →"}, parts).join())
    assert frame.header == {"k": "ünïcödé →"}
    assert len(frame.parts) == 1004
    assert bytes(frame.parts[2]) == b"abcd"
    assert bytes(frame.parts[1]) == b"x" * 70_000


def test_empty_frame() -> None:
    assert decode_frame(encode_frame({}).join()) == Frame({}, [])


def test_parts_are_views_of_the_input() -> None:
    data = bytearray(encode_frame({}, [b"abc"]).join())
    part = decode_frame(data).parts[0]
    data[-1:] = b"Z"
    assert bytes(part) == b"abZ"


def test_trailing_bytes_are_a_framing_error() -> None:
    data = encode_frame({}, [b"abc"]).join()
    with pytest.raises(FramingError, match="unexpected byte"):
        decode_frame(data + b"\0")


@pytest.mark.parametrize(
    "header",
    [
        {"v": 2, "signed": False, "lens": [], "h": {}},
        {"v": 99, "layout": "something new"},
        {"v": 0},
    ],
)
def test_unknown_version(header) -> None:
    with pytest.raises(UnsupportedVersionError, match="version"):
        decode_frame(raw_frame(header))


@pytest.mark.parametrize(
    "header",
    [
        {"signed": False, "lens": [], "h": {}},
        {"v": "1", "signed": False, "lens": [], "h": {}},
        {"v": True, "signed": False, "lens": [], "h": {}},
        {"v": 1, "signed": 0, "lens": [], "h": {}},
        {"v": 1, "signed": False, "lens": [-1], "h": {}},
        {"v": 1, "signed": False, "lens": [1.0], "h": {}},
        {"v": 1, "signed": False, "lens": [], "h": []},
        {"v": 1, "signed": False, "lens": [], "h": {}, "extra": 1},
        [1, 2, 3],
    ],
)
def test_malformed_headers(header) -> None:
    with pytest.raises(FramingError, match="malformed") as info:
        decode_frame(raw_frame(header))
    assert not isinstance(info.value, UnsupportedVersionError)


def test_header_that_is_not_json() -> None:
    with pytest.raises(FramingError, match="malformed"):
        decode_frame(struct.pack(">I", 3) + b"{x}")


def test_absurd_header_length() -> None:
    data = struct.pack(">I", MAX_HEADER_BYTES + 1) + b"{}"
    with pytest.raises(FramingError, match="limit") as info:
        decode_frame(data)
    assert not isinstance(info.value, TruncatedFrameError)


def test_unencodable_header_and_part() -> None:
    with pytest.raises(SerializationError, match="header"):
        encode_frame({"x": object()})
    with pytest.raises(SerializationError, match="part 0"):
        encode_frame({}, [np.arange(10)[::2]])


# --- signing -----------------------------------------------------------------------------


def test_signed_frame_has_mac_trailer_and_verifies() -> None:
    signed = encode_frame({"a": 1}, [b"xyz"], secret=SECRET)
    unsigned = encode_frame({"a": 1}, [b"xyz"])
    assert len(signed.parts[-1]) == MAC_BYTES
    assert decode_frame(signed.join(), secret=SECRET).parts[0] == b"xyz"
    # A receiver without a secret accepts a signed frame and skips its trailer.
    assert decode_frame(signed.join()).parts[0] == b"xyz"
    assert len(signed.join()) == len(unsigned.join()) + MAC_BYTES - 1  # "true" vs "false"


def test_missing_mac_raises_missing_signature() -> None:
    with pytest.raises(MissingSignatureError, match="not signed"):
        decode_frame(encode_frame({}, [b"x"]).join(), secret=SECRET)


def test_wrong_secret_raises_bad_signature() -> None:
    data = encode_frame({}, [b"x"], secret=b"other secret").join()
    with pytest.raises(BadSignatureError, match="does not match"):
        decode_frame(data, secret=SECRET)


def test_tampering_with_any_byte_is_detected() -> None:
    data = encode_frame({"topic": "t"}, [b"payload", b"more"], secret=SECRET).join()
    body_start = len(data) - MAC_BYTES - len(b"payloadmore")
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        expected = BadSignatureError if index >= body_start else (FramingError, SecurityError)
        with pytest.raises(expected):
            decode_frame(bytes(tampered), secret=SECRET)


@pytest.mark.parametrize("secret", [b"", "text", 123])
def test_invalid_secrets_are_configuration_errors(secret) -> None:
    with pytest.raises(ConfigurationError):
        encode_frame({}, secret=secret)
    with pytest.raises(ConfigurationError):
        decode_frame(encode_frame({}, secret=SECRET).join(), secret=secret)


class Exploit:
    """Unpickling this prints; the tests prove verification happens first."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("exploit ran",))


def test_nothing_is_unpickled_before_verification(capsys) -> None:
    unsigned = dumps(Exploit()).join()
    forged = dumps(Exploit(), secret=b"attacker").join()
    with pytest.raises(MissingSignatureError):
        loads(unsigned, secret=SECRET)
    with pytest.raises(BadSignatureError):
        loads(forged, secret=SECRET)
    with pytest.raises(DeserializationError, match="allow_pickle"):
        loads(unsigned, allow_pickle=False)
    assert capsys.readouterr().out == ""
    loads(unsigned)  # control: without protection it does run
    assert capsys.readouterr().out == "exploit ran\n"


# --- serializers -------------------------------------------------------------------------


@FAST
@given(obj=picklables, secret=secrets_)
def test_default_round_trip(obj, secret) -> None:
    result = loads(dumps(obj, secret=secret).join(), secret=secret)
    assert result == obj
    assert type(result) is type(obj)


@FAST
@given(obj=json_values, meta=headers)
def test_json_round_trip_and_meta(obj, meta) -> None:
    data = dumps(obj, serializer=JsonSerializer(), meta=meta).join()
    assert loads_with_meta(data, allow_pickle=False) == (meta, obj)


@FAST
@given(obj=st.binary() | st.text(), kind=st.sampled_from([bytes, bytearray, memoryview]))
def test_raw_fast_path_keeps_types(obj, kind) -> None:
    value = obj if isinstance(obj, str) else kind(obj)
    segments = dumps(value)
    assert json.loads(bytes(segments.parts[0][4:]))["h"] == {"ser": "raw"}
    result = loads(segments.join(), allow_pickle=False)
    assert type(result) is type(value)
    assert result == value


@pytest.mark.parametrize(
    "value", [None, "", "héllo→ 🐍", "\ud800 lone surrogate", b"", bytearray(), 0, 1.5, (), []]
)
def test_type_fidelity(value) -> None:
    result = loads(dumps(value).join())
    assert type(result) is type(value)
    assert result == value


def test_memoryview_comes_back_as_a_flat_view_of_the_input() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    data = bytearray(dumps(memoryview(array)).join())
    result = loads(data)
    assert isinstance(result, memoryview)
    assert (result.format, result.ndim, result.readonly) == ("B", 1, False)
    assert bytes(result) == array.tobytes()
    assert loads(bytes(data)).readonly
    strided = memoryview(array[:, ::2])
    assert bytes(loads(dumps(strided).join())) == np.ascontiguousarray(array[:, ::2]).tobytes()


def test_subclasses_take_the_pickle_path() -> None:
    class Tagged(bytes):
        pass

    segments = dumps(Tagged(b"abc"))
    assert json.loads(bytes(segments.parts[0][4:]))["h"]["ser"] == "pickle"
    assert type(loads(segments.join())).__name__ == "Tagged"
    assert RawSerializer().deserialize([memoryview(b"b"), memoryview(b"abc")]) == b"abc"


@pytest.mark.parametrize(
    "array",
    [
        np.arange(20_000, dtype=np.float32).reshape(100, 200),
        np.asfortranarray(np.arange(40_000, dtype=np.int64).reshape(200, 200)),
        np.zeros(5, dtype=[("a", "i4"), ("b", "f8")]),
        np.array([1, "two", None], dtype=object),
        np.arange(3, dtype=np.uint8),
    ],
)
def test_numpy_round_trip(array) -> None:
    result = loads(dumps(array).join())
    assert result.dtype == array.dtype
    assert result.flags.f_contiguous == array.flags.f_contiguous
    np.testing.assert_array_equal(result, array)


@FAST
@given(sizes=st.lists(st.integers(0, 40_000), max_size=40))
def test_many_out_of_band_buffers(sizes) -> None:
    arrays = [np.full(n, i % 256, dtype=np.uint8) for i, n in enumerate(sizes)]
    segments = dumps(arrays)
    big = sum(n >= PickleSerializer().out_of_band_min for n in sizes)
    assert len(json.loads(bytes(segments.parts[0][4:]))["lens"]) == 1 + big
    for got, want in zip(loads(segments.join()), arrays, strict=True):
        np.testing.assert_array_equal(got, want)


def test_out_of_band_arrays_are_read_only_views_of_bytes_input() -> None:
    data = dumps({"a": np.ones(100_000)}).join()
    from_bytes = loads(data)["a"]
    from_bytearray = loads(bytearray(data))["a"]
    assert not from_bytes.flags.writeable
    assert from_bytearray.flags.writeable
    assert np.shares_memory(from_bytes, np.frombuffer(data, np.uint8))


def shares(part: memoryview, source: Any) -> bool:
    return bool(np.shares_memory(np.frombuffer(part, np.uint8), np.frombuffer(source, np.uint8)))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "serializer"),
    [
        (lambda: np.ones(64 * MB // 8), None),
        (lambda: b"\x01" * (64 * MB), None),
        (lambda: b"\x01" * (64 * MB), PickleSerializer()),
        (lambda: bytearray(64 * MB), PickleSerializer()),
    ],
    ids=["numpy", "bytes-raw", "bytes-pickle", "bytearray-pickle"],
)
def test_64_mb_is_not_copied(make, serializer) -> None:
    source = make()
    obj = {"payload": source, "note": "small"} if serializer else source
    tracemalloc.start()
    try:
        segments = dumps(obj, serializer=serializer, secret=SECRET)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MB, f"dumps allocated {peak} bytes"
    assert segments.nbytes > 64 * MB
    assert sum(shares(part, source) for part in segments.parts) == 1
    result = loads(segments.join(), secret=SECRET)
    result = result["payload"] if serializer else result
    assert type(result) is type(source)
    assert len(result) == len(source)


@pytest.mark.parametrize(
    ("serializer", "obj", "type_name"),
    [
        (PickleSerializer(), threading.Lock(), "lock"),
        (None, (i for i in range(3)), "generator"),
        (JsonSerializer(), {1, 2}, "set"),
        (JsonSerializer(), float("nan"), "float"),
        (RawSerializer(), 42, "int"),
    ],
)
def test_unserializable_objects_name_their_type(serializer, obj, type_name) -> None:
    with pytest.raises(SerializationError, match=type_name) as info:
        dumps(obj, serializer=serializer)
    assert not isinstance(info.value, DeserializationError)


@pytest.mark.parametrize(
    ("ser", "parts"),
    [
        ("pickle", [b"not a pickle"]),
        ("pickle", []),
        ("json", [b"{nope"]),
        ("json", [b"\xff"]),
        ("raw", [b"b"]),
        ("raw", [b"?", b"x"]),
        ("raw", [b"s", b"\xff"]),
        ("auto", []),
    ],
)
def test_corrupt_payloads_raise_deserialization_error(ser, parts) -> None:
    with pytest.raises(DeserializationError):
        loads(encode_frame({"ser": ser}, parts).join())


@pytest.mark.parametrize(
    "header", [{}, {"ser": 1}, {"ser": "raw", "meta": []}, {"ser": "raw", "x": 1}]
)
def test_frames_not_written_by_dumps(header) -> None:
    with pytest.raises(FramingError, match="dumps"):
        loads(encode_frame(header, [b"b", b""]).join())


def test_unknown_serializer_name_is_not_imported() -> None:
    data = encode_frame({"ser": "os.system"}, [b"echo hi"]).join()
    with pytest.raises(DeserializationError, match="not registered"):
        loads(data)


class Reverse:
    name = "test-reverse"

    def serialize(self, obj: Any) -> list[Any]:
        if not isinstance(obj, bytes):
            raise TypeError("bytes only")
        return [obj[::-1]]

    def deserialize(self, parts: list[memoryview]) -> Any:
        if not parts:
            raise ValueError("no parts")
        return bytes(parts[0])[::-1]


def test_registry() -> None:
    custom = Reverse()
    assert isinstance(custom, Serializer)
    assert get_serializer("auto") is DEFAULT_SERIALIZER
    register_serializer(custom)
    try:
        register_serializer(custom)  # same object again is fine
        assert get_serializer("test-reverse") is custom
        assert loads(dumps(b"abc", serializer=custom).join()) == b"abc"
        with pytest.raises(ConfigurationError, match="already registered"):
            register_serializer(Reverse())
        register_serializer(Reverse(), replace=True)
        with pytest.raises(SerializationError, match="bytes only"):
            dumps("text", serializer=custom)
        with pytest.raises(DeserializationError, match="no parts"):
            loads(encode_frame({"ser": "test-reverse"}).join())
    finally:
        unregister_serializer("test-reverse")
    with pytest.raises(ConfigurationError, match="known"):
        get_serializer("test-reverse")
    for name in ("pickle", "json", "raw", "auto"):
        with pytest.raises(ConfigurationError, match="built"):
            unregister_serializer(name)
    with pytest.raises(ConfigurationError, match="built"):
        register_serializer(PickleSerializer())
    custom.name = ""
    with pytest.raises(ConfigurationError, match="name"):
        register_serializer(custom)


def test_auto_serializer_parts() -> None:
    auto = AutoSerializer(fallback=JsonSerializer())
    assert auto.select(b"x").name == "raw"
    assert auto.select([1]).name == "json"
    assert auto.serialize([1]) == [b"[1]"]
    assert loads(dumps([1], serializer=auto).join(), allow_pickle=False) == [1]


def test_loads_accepts_segments_and_meta_is_optional() -> None:
    assert loads_with_meta(dumps("x")) == ({}, "x")
    assert loads_with_meta(dumps("x", meta={"k": "ü"}).join()) == ({"k": "ü"}, "x")
    with pytest.raises(SerializationError):
        dumps("x", meta={"k": object()})


def test_large_object_graph_spans_many_pickle_chunks() -> None:
    graph = {"ints": list(range(300_000)), "texts": [f"é{i}" for i in range(50_000)]}
    segments = dumps(graph, serializer=PickleSerializer())
    assert len(segments.parts) > 10  # the pickler flushed many frames, none copied again
    assert loads(segments.join()) == graph


def test_in_band_buffers_of_any_layout() -> None:
    serializer = PickleSerializer(out_of_band_min=10**9)
    for array in (np.ones((300, 300)), np.asfortranarray(np.ones((300, 300))), np.ones(10)):
        segments = dumps(array, serializer=serializer)
        assert len(json.loads(bytes(segments.parts[0][4:]))["lens"]) == 1
        np.testing.assert_array_equal(loads(segments.join()), array)


def test_non_finite_meta_round_trips() -> None:
    meta, _ = loads_with_meta(dumps(1, meta={"inf": float("inf"), "big": 2**80}).join())
    assert meta == {"inf": float("inf"), "big": 2**80}


# --- raw fast path -----------------------------------------------------------------------

raw_values = (
    st.binary(max_size=2000)
    | st.binary(max_size=100).map(bytearray)
    | st.text(max_size=300)
    | st.sampled_from(["\ud800 lone surrogate", "é→🐍", b"", bytearray(), ""])
)


def general_dumps(value: Any, secret: bytes | None) -> bytes:
    """The frame the general path writes (serializer + encode_frame)."""
    return encode_frame({"ser": "raw"}, RawSerializer().serialize(value), secret=secret).join()


def general_outcome(data: Any, secret: bytes | None) -> Any:
    try:
        value = loads_with_meta(data, secret=secret)[1]  # no fast path there
    except FrameworkError as exc:
        return type(exc)
    return type(value), value


def fast_outcome(data: Any, secret: bytes | None) -> Any:
    try:
        value = loads(data, secret=secret)
    except FrameworkError as exc:
        return type(exc)
    return type(value), value


def as_inputs(data: bytes) -> list[Any]:
    return [data, bytearray(data), memoryview(b"pad" + data)[3:]]


@FAST
@given(value=raw_values, secret=secrets_)
def test_fast_path_frames_are_byte_identical(value, secret) -> None:
    for serializer in (None, DEFAULT_SERIALIZER, RawSerializer(), get_serializer("raw")):
        frame = dumps(value, serializer=serializer, secret=secret)
        assert frame.join() == general_dumps(value, secret)
        assert json.loads(bytes(frame.parts[0][4:]))["h"] == {"ser": "raw"}
        for data in as_inputs(frame.join()):
            assert fast_outcome(data, secret) == (type(value), value)


def test_fast_path_skips_the_general_framing_code(monkeypatch) -> None:
    frames = [(v, dumps(v, secret=SECRET).join()) for v in (b"ab", "ab", bytearray(b"ab"))]

    def general_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the general path ran")

    monkeypatch.setattr(serialize_module, "encode_frame", general_path)
    monkeypatch.setattr(serialize_module, "decode_frame", general_path)
    for value, data in frames:
        assert dumps(value, secret=SECRET).join() == data
        assert loads(data, secret=SECRET) == value
        assert type(loads(data, secret=SECRET)) is type(value)
    assert loads(dumps(b"x" * 100_000).join()) == b"x" * 100_000
    for obj, kwargs in [
        (memoryview(b"ab"), {}),
        (b"ab", {"meta": {"k": 1}}),
        (b"ab", {"serializer": PickleSerializer()}),
        (1, {}),
    ]:
        with pytest.raises(AssertionError, match="general"):
            dumps(obj, **kwargs)


@FAST
@given(value=raw_values, secret=secrets_, mask=st.integers(1, 255), cut=st.integers(0, 10**6))
def test_fast_path_errors_match_the_general_path(value, secret, mask, cut) -> None:
    data = dumps(value[:64], secret=secret).join()
    damaged = [data[: cut % len(data)], data + b"\0"]
    for index in range(len(data)):
        garbled = bytearray(data)
        garbled[index] ^= mask
        damaged.append(bytes(garbled))
    for broken in damaged:
        for given_data in as_inputs(broken):
            assert fast_outcome(given_data, secret) == general_outcome(given_data, secret)
    with pytest.raises(TruncatedFrameError):
        loads(damaged[0], secret=secret)


def test_fast_path_security() -> None:
    signed = dumps(b"payload", secret=SECRET).join()
    unsigned = dumps(b"payload").join()
    assert loads(signed) == b"payload"  # no secret here: the trailer is skipped
    with pytest.raises(MissingSignatureError):
        loads(unsigned, secret=SECRET)
    with pytest.raises(BadSignatureError):
        loads(signed, secret=b"other secret")
    tampered = bytearray(signed)
    tampered[-MAC_BYTES - 1] ^= 1
    with pytest.raises(BadSignatureError):
        loads(bytes(tampered), secret=SECRET)
    with pytest.raises(ConfigurationError):
        dumps(b"payload", secret=b"")
    with pytest.raises(ConfigurationError):
        loads(signed, secret="text")  # type: ignore[arg-type]
    with pytest.raises(DeserializationError, match="UTF-8"):
        loads(encode_frame({"ser": "raw"}, [b"s", b"\xff"], secret=SECRET).join(), secret=SECRET)


_UNPICKLED: list[int] = []


class _Recorded:
    """Records that it was unpickled."""

    def __init__(self) -> None:
        self.state = 1

    def __setstate__(self, state: Any) -> None:
        _UNPICKLED.append(1)


def test_a_frame_whose_meta_is_refused_is_never_deserialized() -> None:
    frame = dumps(_Recorded(), meta={"for": "another message"}, secret=b"k")

    def refuse(meta: dict[str, Any]) -> None:
        raise FramingError(f"bound to {meta}")

    with pytest.raises(FramingError, match="another message"):
        loads_with_meta(frame, secret=b"k", check_meta=refuse)
    assert _UNPICKLED == []
    loads_with_meta(frame, secret=b"k", check_meta=lambda meta: None)
    assert _UNPICKLED == [1]

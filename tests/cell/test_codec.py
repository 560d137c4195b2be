"""Pure parts: envelopes, chunking, window accounting, reassembly, encryption."""

from __future__ import annotations

import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.cell.assembler import BlobBuffer, ChunkDecoder, encode_chunk
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import (
    Announce,
    ChunkHeader,
    Control,
    decode,
    entry_id,
    error_from_wire,
    iter_chunks,
    seq_of,
)
from framework.cell.streams import BytesStream, IterStream
from framework.cell.window import Position, Window
from framework.exceptions import (
    BlobSizeError,
    ChecksumError,
    EncryptionError,
    SequenceError,
    StreamCancelled,
    StreamError,
    TruncatedFrameError,
    UnsupportedVersionError,
)

# -- envelopes -----------------------------------------------------------------------------


def test_announce_round_trips_non_ascii_headers() -> None:
    ann = Announce(
        sid=5, origin="ä", channel="ch", topic="tö", mode="blob", size=3,
        headers={"名前": "値", "n": [1, 2]}, targets=["b"], chunk_size=10, window=20,
    )  # fmt: skip
    raw = ann.model_dump_json().encode()
    assert decode(Announce, raw, "x") == ann


def test_decode_rejects_other_versions_and_garbage() -> None:
    raw = Control(kind="ack", role="rx", sender="b").model_dump_json()
    with pytest.raises(UnsupportedVersionError, match="version 2"):
        decode(Control, raw.replace('"v":1', '"v":2'), "control")
    with pytest.raises(StreamError, match="malformed"):
        decode(Control, b'{"v": 1, "kind": "nope"}', "control")
    with pytest.raises(StreamError):
        decode(Control, b"not json", "control")


def test_entry_ids_are_deterministic_and_never_zero() -> None:
    assert entry_id(0) == "1-0"
    assert seq_of(b"1-0") == 0
    assert seq_of(entry_id(41)) == 41


def test_errors_cross_by_name_only() -> None:
    err = error_from_wire("ChecksumError", "bad", "Receiver 'b'")
    assert isinstance(err, ChecksumError)
    assert "Receiver 'b' reported: bad" in str(err)
    assert isinstance(error_from_wire("StreamCancelled", "x", "w"), StreamCancelled)
    other = error_from_wire("os.system", "rm -rf", "Receiver 'b'")
    assert type(other) is StreamError
    assert "failed with os.system: rm -rf" in str(other)


# -- chunking ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40), max_size=12),
    chunk=st.integers(min_value=1, max_value=17),
)
def test_iter_chunks_coalesces_to_exact_chunks(pieces: list[bytes], chunk: int) -> None:
    data = b"".join(pieces)
    out = list(iter_chunks(IterStream(pieces), chunk))
    assert b"".join(bytes(c) for c, _ in out) == data
    assert [last for _, last in out] == [False] * (len(out) - 1) + [True]
    assert (all(len(c) == chunk for c, _ in out[:-1]) and 0 < len(out[-1][0]) <= chunk) or not data


def test_iter_chunks_edges() -> None:
    assert [(bytes(c), last) for c, last in iter_chunks(BytesStream(b""), 4)] == [(b"", True)]
    exact = list(iter_chunks(BytesStream(b"abcdefgh"), 4))
    assert [(bytes(c), last) for c, last in exact] == [(b"abcd", False), (b"efgh", True)]
    views = [c for c, _ in iter_chunks(BytesStream(b"abcdefgh"), 4)]
    assert all(isinstance(v, memoryview) for v in views)  # full reads pass through uncopied


# -- window --------------------------------------------------------------------------------


def test_window_waits_for_the_slowest_target_and_trims_by_min_ack() -> None:
    window = Window(["a", "b"], limit=100)
    window.on_sent(0, 60)
    window.on_sent(1, 120)
    assert not window.can_send()
    assert window.room() == -20
    assert window.on_ack("a", Position(1, 120))
    assert not window.can_send()
    assert window.trim_point() is None
    assert window.on_ack("b", Position(0, 60))
    assert window.can_send()
    assert window.in_flight() == 60
    assert window.trim_point() == 1
    assert window.trim_point() is None
    assert not window.on_ack("b", Position(0, 60))  # stale
    assert not window.on_ack("stranger", Position(5, 500))
    assert not window.all_done()
    window.on_ack("a", Position(1, 120), done=True)
    window.on_ack("b", Position(1, 120), done=True)
    assert window.all_done()
    assert window.slowest() == Position(1, 120)


def test_window_needs_targets() -> None:
    with pytest.raises(StreamError):
        Window([], 10)


# -- reassembly ----------------------------------------------------------------------------


def frames(
    data: bytes, chunk: int, cipher: ChunkCipher | None = None
) -> list[tuple[ChunkHeader, bytes]]:
    out = []
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [b""]
    off = 0
    for seq, piece in enumerate(pieces):
        raw, wire = encode_chunk(9, seq, off, piece, seq == len(pieces) - 1, cipher)
        out.append((decode(ChunkHeader, raw, "h"), bytes(wire)))
        off += len(piece)
    return out


def test_decoder_reassembles_and_drops_duplicates() -> None:
    data = bytes(range(256)) * 3
    decoder = ChunkDecoder(9, Position(), size=len(data))
    got = bytearray()
    stream = frames(data, 100)
    for header, wire in stream[:3] + stream[1:]:  # a replay of chunks 1 and 2
        plain = decoder.accept(header, wire)
        if plain is not None:
            got += plain
    assert bytes(got) == data
    assert decoder.finished
    assert decoder.position == Position(len(stream) - 1, len(data))


def test_decoder_detects_corruption_gaps_and_bad_lengths() -> None:
    stream = frames(b"x" * 250, 100)
    header, wire = stream[0]
    with pytest.raises(ChecksumError, match="crc32"):
        ChunkDecoder(9, Position()).accept(header, b"y" + wire[1:])
    with pytest.raises(TruncatedFrameError):
        ChunkDecoder(9, Position()).accept(header, wire[:-1])
    with pytest.raises(SequenceError, match="chunk 0 is missing"):
        ChunkDecoder(9, Position()).accept(*stream[1])
    decoder = ChunkDecoder(9, Position(), size=1000)
    decoder.accept(*stream[0])
    decoder.accept(*stream[1])
    with pytest.raises(SequenceError, match="announced with 1000 bytes"):
        decoder.accept(*stream[2])


def test_decoder_resumes_mid_stream() -> None:
    stream = frames(b"abcdefghij", 4)
    decoder = ChunkDecoder(9, Position(0, 4))
    assert decoder.accept(*stream[0]) is None  # already consumed before the restart
    assert decoder.accept(*stream[1]) == b"efgh"


def test_blob_buffer_is_allocated_once_and_bounded() -> None:
    with pytest.raises(BlobSizeError):
        BlobBuffer(1, size=11, max_size=10)
    blob = BlobBuffer(1, size=3 << 20, max_size=4 << 20)
    blob.write(0, b"a" * (3 << 20))
    with pytest.raises(SequenceError):
        blob.write((3 << 20) - 1, b"xy")
    data = blob.release()
    assert isinstance(data, bytearray)
    assert data == b"a" * (3 << 20)


# -- encryption ----------------------------------------------------------------------------


def test_secure_chunks_round_trip_and_bind_their_position() -> None:
    key = bytes(range(32))
    data = b"secret payload " * 50
    sealed = frames(data, 64, ChunkCipher(key))
    assert all(data[:64] not in wire for _, wire in sealed)
    decoder = ChunkDecoder(9, Position(), len(data), ChunkCipher(key))
    assert b"".join(decoder.accept(h, w) or b"" for h, w in sealed) == data
    header, wire = sealed[0]
    moved = header.model_copy(update={"seq": 1, "off": 64, "crc": zlib.crc32(wire)})
    decoder = ChunkDecoder(9, Position(0, 64), cipher=ChunkCipher(key))
    with pytest.raises(EncryptionError, match="failed authentication"):
        decoder.accept(moved, wire)
    with pytest.raises(EncryptionError, match="failed authentication"):
        ChunkDecoder(9, Position(), cipher=ChunkCipher(b"k" * 16)).accept(header, wire)
    with pytest.raises(EncryptionError, match="announced as plain"):
        ChunkDecoder(9, Position()).accept(header, wire)


def test_cipher_needs_a_good_key() -> None:
    with pytest.raises(EncryptionError, match="needs a shared key"):
        ChunkCipher(None)
    with pytest.raises(EncryptionError, match="16, 24 or 32"):
        ChunkCipher(b"short")


def test_cipher_without_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(EncryptionError, match=r"framework\[secure\]"):
        ChunkCipher(b"k" * 16)

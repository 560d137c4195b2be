"""Pure parts: envelopes, chunking, window accounting, reassembly, encryption."""

from __future__ import annotations

from typing import Any

import pytest
from crc32c import crc32c
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
    seq_of,
)
from framework.cell.pump import EOF, Chunker, DirectPump, SourcePump
from framework.cell.streams import BytesStream, IterStream
from framework.cell.window import Position, Window
from framework.exceptions import (
    BlobSizeError,
    ChecksumError,
    EncryptionError,
    MalformedFrameError,
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
    with pytest.raises(UnsupportedVersionError, match="version 1"):
        decode(Control, raw.replace('"v":2', '"v":1'), "control")
    with pytest.raises(MalformedFrameError, match=r"control is malformed.*kind"):
        decode(Control, b'{"v": 2, "kind": "nope"}', "control")
    with pytest.raises(MalformedFrameError, match="not a JSON object"):
        decode(Control, b"not json", "control")
    with pytest.raises(MalformedFrameError, match="control is malformed"):
        decode(Control, b"[" * 100_000, "control")  # deeper than the json module recurses


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


def _cut(pieces: list[bytes], chunk: int, flush_after: int = -1) -> list[tuple[bytes, bool]]:
    chunker, out = Chunker(chunk), []
    for i, piece in enumerate(pieces):
        out += chunker.feed(piece)
        if i == flush_after:
            out += chunker.flush()  # the linger expired
    out += chunker.finish()
    return [(bytes(c), last) for c, last in out]


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40), max_size=12),
    chunk=st.integers(min_value=1, max_value=17),
    flush_after=st.integers(min_value=-1, max_value=12),
)
def test_chunker_cuts_in_order_and_marks_only_the_last(
    pieces: list[bytes], chunk: int, flush_after: int
) -> None:
    out = _cut(pieces, chunk, flush_after)
    assert b"".join(c for c, _ in out) == b"".join(pieces)
    assert [last for _, last in out] == [False] * (len(out) - 1) + [True]
    assert all(0 < len(c) <= chunk for c, _ in out[:-1])
    if flush_after < 0:  # without a linger flush every chunk but the last is full
        assert all(len(c) == chunk for c, _ in out[:-1])


def test_chunker_edges() -> None:
    assert _cut([], 4) == [(b"", True)]
    assert _cut([b"abcd", b"efgh"], 4) == [(b"abcd", False), (b"efgh", True)]
    assert _cut([b"abcd"], 4, flush_after=0) == [(b"abcd", False), (b"", True)]
    view = memoryview(b"abcd")
    chunker = Chunker(4)
    assert chunker.feed(view) == []
    assert chunker.buffered == 4
    assert chunker.finish()[0][0] is view  # full reads pass through uncopied


def test_pumps_hand_over_reads_then_eof() -> None:
    direct = DirectPump(BytesStream(b"abcdef"), 4)
    assert [bytes(direct.get(0)), bytes(direct.get(0)), direct.get(0)] == [b"abcd", b"ef", EOF]
    pump = SourcePump(IterStream([b"ab", b"c"]), 4, "fw-cell-src-test")
    pump.start()
    got = [pump.get(5), pump.get(5), pump.get(5)]
    assert [bytes(g) if g is not EOF else g for g in got] == [b"ab", b"c", EOF]
    pump.close()
    assert pump.thread is not None
    pump.thread.join(5)

    def broken() -> Any:
        yield b"x"
        raise ValueError("source broke")

    pump = SourcePump(IterStream(broken()), 4, "fw-cell-src-test")
    pump.start()
    assert bytes(pump.get(5)) == b"x"
    with pytest.raises(ValueError, match="source broke"):
        pump.get(5)
    pump.close()
    pump.thread.join(5)


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


def test_blob_buffer_grows_with_the_data_never_past_the_announced_size() -> None:
    with pytest.raises(BlobSizeError):
        BlobBuffer(1, size=11, max_size=10)
    forged = BlobBuffer(1, size=4 << 30, max_size=4 << 30)  # a forged 4 GiB announcement
    forged.write(0, b"a" * 1000)
    assert len(forged.data) <= 1 << 20  # memory follows the data, not the claim
    blob = BlobBuffer(1, size=3 << 20, max_size=4 << 20)
    for off in range(0, 3 << 20, 1 << 19):
        blob.write(off, b"a" * (1 << 19))
        assert len(blob.data) <= 3 << 20
    with pytest.raises(SequenceError):
        blob.write((3 << 20) - 1, b"xy")
    data = blob.release()
    assert isinstance(data, bytearray)
    assert data == b"a" * (3 << 20)


def test_blob_buffer_reserves_room_in_step_with_the_data() -> None:
    # The room asked for is read_count x the announced chunk size: unverified.
    forged = BlobBuffer(1, size=4 << 30, max_size=4 << 30)
    forged.reserve(8 * (2 << 30))
    allocated = len(forged.data)  # (a failing assert must not print gigabytes)
    assert allocated <= 8 << 20
    forged.write(0, b"a" * (3 << 20))
    forged.reserve(8 * (2 << 30))
    allocated = len(forged.data)
    assert allocated <= 2 * (8 << 20)
    assert bytes(forged.data[: 3 << 20]) == b"a" * (3 << 20)
    default = BlobBuffer(1, size=0, max_size=1 << 30)
    default.reserve(8 * ((1 << 20) - 1024))  # a batch of default chunks fits at once
    assert default.slot(0, 8 * ((1 << 20) - 1024)) is not None


def test_blob_buffer_of_unknown_size_stops_at_the_limit() -> None:
    blob = BlobBuffer(1, size=0, max_size=25)
    blob.write(0, b"x" * 10)
    blob.write(10, b"y" * 10)
    with pytest.raises(BlobSizeError, match="exceeds the 25 bytes"):
        blob.write(20, b"z" * 10)
    assert blob.release() == b"x" * 10 + b"y" * 10


# -- encryption ----------------------------------------------------------------------------


def test_secure_chunks_round_trip_and_bind_their_position() -> None:
    key = bytes(range(32))
    data = b"secret payload " * 50
    sealed = frames(data, 64, ChunkCipher(key))
    assert all(data[:64] not in wire for _, wire in sealed)
    decoder = ChunkDecoder(9, Position(), len(data), ChunkCipher(key))
    assert b"".join(decoder.accept(h, w) or b"" for h, w in sealed) == data
    header, wire = sealed[0]
    moved = header.model_copy(update={"seq": 1, "off": 64, "crc": crc32c(wire)})
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


def test_a_window_goes_on_without_a_dropped_receiver() -> None:
    window = Window(["a", "b"], limit=100)
    window.on_sent(1, 150)
    window.on_ack("a", Position(1, 150), done=True)
    assert not window.can_send()  # "b" holds it back
    assert not window.all_done()
    window.drop("b")
    assert window.targets == ["a"]
    assert window.can_send()
    assert window.all_done()
    assert window.trim_point() == 2
    with pytest.raises(StreamError, match="last receiver"):
        window.drop("a")

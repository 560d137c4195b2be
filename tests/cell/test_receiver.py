"""The receiving side's acknowledgements, driven directly against a fake Redis."""

from __future__ import annotations

import threading

from framework.cell.assembler import encode_chunk
from framework.cell.config import DEFAULT_CHUNK_SIZE, CellConfig, MiB
from framework.cell.frames import Announce
from framework.cell.receiver import RxTransfer
from framework.cell.transport import TransferIO
from framework.cell.window import Position
from framework.connection import RedisConnection


def _write(io: TransferIO, data: bytes, seqs: range, chunk: int) -> None:
    frames = []
    for seq in seqs:
        piece = data[seq * chunk : (seq + 1) * chunk]
        last = (seq + 1) * chunk >= len(data)
        header, wire = encode_chunk(io.sid, seq, seq * chunk, piece, last)
        frames.append((seq, header, wire))
    io.write(frames, None, "0-0")


def test_a_pending_ack_carries_the_latest_consumed_position(fake_conn: RedisConnection) -> None:
    data = bytes(range(40))
    ann = Announce(
        sid=7, origin="a", channel="c", topic="t", mode="stream", size=len(data),
        targets=["b"], chunk_size=10, window=40,
    )  # fmt: skip
    config = CellConfig(chunk_size=10, window=40, ack_interval=20, idle_timeout=5)
    io = TransferIO(fake_conn, ann.sid, 60)
    rx = RxTransfer(io, ann, "b", config, None, Position(), threading.Event())
    _write(io, data, range(3), 10)
    got = rx.fetch()
    assert [h.seq for h, _ in got] == [0, 1, 2]
    for header, _ in got:
        rx.consumed(Position(header.seq, header.off + header.len), header.last)
    # The ack fell due at chunk 1 but rides on the next fetch with chunk 2's position,
    # so the sender's window reopens as far as the receiver really got.
    _write(io, data, range(3, 4), 10)
    assert [h.seq for h, _ in rx.fetch()] == [3]
    assert io.acked("b") == Position(2, 30)
    rx.consumed(Position(3, 40), last=True)
    # The final ack waits until the application is done with the data.
    assert not rx.ended
    assert io.acked("b") == Position(2, 30)
    rx.complete()
    assert rx.ended
    assert io.acked("b") == Position(3, 40)


def test_the_receivers_of_a_fan_out_ask_for_about_two_mebibytes(conn: RedisConnection) -> None:
    chunk = 300 * 1024
    data = bytes(8 * chunk)
    config = CellConfig(chunk_size=chunk, window=len(data), ack_interval=chunk, read_count=8)
    for targets, per_read in ((["b"], 8), (["b", "c"], 6), (["b", "c", "d", "e"], 6)):
        ann = Announce(
            sid=len(targets), origin="a", channel="c", topic="t", mode="stream",
            size=len(data), targets=targets, chunk_size=chunk, window=len(data),
        )  # fmt: skip
        io = TransferIO(conn, ann.sid, 60)
        _write(io, data, range(8), chunk)
        rx = RxTransfer(io, ann, "b", config, None, Position(), threading.Event())
        seqs: list[int] = []
        while len(seqs) < 8:
            got = [header.seq for header, _ in rx.fetch()]
            assert len(got) == min(per_read, 8 - len(seqs)), targets
            seqs += got
        rx.close()
        assert seqs == list(range(8))


def test_read_count_for_stays_within_one_and_the_configured_count() -> None:
    config = CellConfig(read_count=8)
    chunk = DEFAULT_CHUNK_SIZE
    # Fan-out receivers ask for about two MiB: two default chunks.
    assert [config.read_count_for(n, chunk) for n in (0, 1, 2, 4, 9)] == [8, 8, 2, 2, 2]
    assert config.read_count_for(4, 4 * MiB) == 1
    assert config.read_count_for(4, 64 * 1024) == 8  # 32 would fit: capped at read_count
    assert config.read_count_for(4, 512 * 1024) == 4
    assert CellConfig(read_count=1).read_count_for(4, 1024) == 1

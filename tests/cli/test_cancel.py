"""Ctrl-C on ``framework send`` cancels its transfers: the receivers drop their partial
files, and running the same ``send`` again sends the files afresh, at the first try."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import redis

from framework.cell import CellConfig, StreamCell
from framework.cli._transfer import FileOffer, SendState, start_send
from framework.connection import RedisConnection
from tests.cli.helpers import (
    MiB,
    Running,
    finish,
    partial_size,
    random_file,
    run_cli,
    start_cli,
    wait_for,
)


def test_ctrl_c_then_the_same_send_delivers_and_leaves_no_partial_file(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    original = random_file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out"
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(out), "--count", "1", "--timeout", "60",
        tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    args = ("send", str(original), "--to", "site", "--limit-rate", "12M")
    first = reap(start_cli(*args, tmp_path=tmp_path, url=redis_url))
    wait_for(lambda: partial_size(out) > 4 * MiB, "the receiver to write part of the file")

    assert finish(first.proc, signal.SIGINT) == 130, first.output()
    assert "Interrupted" in first.output()
    wait_for(
        lambda: not list(out.glob(".*.part")),
        "the receiver to remove the cancelled transfer's partial file",
        timeout=15,
    )
    assert "Cancelled by the sender: big.bin" in recv.output()

    again = run_cli(*args, tmp_path=tmp_path, url=redis_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume" not in again.stdout  # a cancelled transfer is not resumed
    assert finish(recv.proc) == 0, recv.output()  # the cancelled file did not count
    assert (out / "big.bin").read_bytes() == original.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["big.bin"]


def test_a_remembered_transfer_that_was_cancelled_is_started_afresh(
    tmp_path: Path, real_conn: RedisConnection
) -> None:
    # The state file outlived the cancellation, as when `send` dies right after it.
    offer = FileOffer.of(random_file(tmp_path / "f.bin", 3 * MiB))
    state = SendState(tmp_path / "state")
    key = state.key("here", offer, ["nobody"])
    with StreamCell(real_conn, "sender", config=CellConfig(idle_timeout=30)) as cell:
        cancelled, resumed = start_send(cell, offer, ["nobody"], state, key)
        assert not resumed
        cancelled.cancel()
        assert cancelled.exception(timeout=10) is not None
        assert state.load(key) == cancelled.get_stream_id()

        again, resumed = start_send(cell, offer, ["nobody"], state, key)
        assert not resumed
        assert again.get_stream_id() != cancelled.get_stream_id()
        assert state.load(key) == again.get_stream_id()


def test_recv_says_when_another_receiver_took_its_cell_name(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    """A recv frozen past its lease finds its name taken by another and takes no new
    files: the user must hear of it without -v (the files go to the other's directory)."""
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(tmp_path / "out"),
        tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    wait_for(lambda: "Receiving as cell" in recv.output(), "recv to start")
    with redis.Redis.from_url(redis_url) as admin:
        key = "fw:cell:{site}:receiver"
        admin.set(key, b"other-host:4242:cafe", px=60_000)  # another recv took the name
        wait_for(lambda: "took the cell name" in recv.output(), "the warning")
        admin.delete(key)
        wait_for(lambda: "has the cell name 'site' back" in recv.output(), "the name back")
    assert finish(recv.proc, signal.SIGINT) == 130
    assert "other-host:4242:cafe" in recv.output()
    assert "takes no new files until that one stops" in recv.output()

"""``send --timeout S`` holds when Redis freezes (SIGSTOP): the command ends within about
``S`` seconds with one error line, and the same command resumes once Redis is back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from framework.embedded import EmbeddedRedis
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

#: The --timeout of these tests, and how long the command may take to honour it.
TIMEOUT = 3.0
DEADLINE = 3 * TIMEOUT


def _freeze(server: EmbeddedRedis) -> float:
    for pid in server.pids:
        os.kill(pid, signal.SIGSTOP)
    return time.monotonic()


def _thaw(server: EmbeddedRedis) -> None:
    for pid in server.pids:
        os.kill(pid, signal.SIGCONT)


def _ends_within(run: Running, seconds: float) -> int:
    try:
        return run.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        run.proc.kill()
        run.proc.wait()
        pytest.fail(f"`send --timeout {TIMEOUT:g}` still ran {seconds:g} s after Redis froze.")


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


def test_frozen_redis_mid_transfer_ends_send_within_its_timeout(
    tmp_path: Path, own_redis: EmbeddedRedis, reap: Callable[[Running], Running]
) -> None:
    url = own_redis.url
    original = random_file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out"
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(out), "--count", "1", "--timeout", "60",
        tmp_path=tmp_path, url=url,
    ))  # fmt: skip
    args = ("send", str(original), "--to", "site", "--timeout", f"{TIMEOUT:g}")
    sender = reap(start_cli(*args, "--limit-rate", "4M", tmp_path=tmp_path, url=url))
    wait_for(lambda: partial_size(out) > 2 * MiB, "the transfer to get going")

    frozen_at = _freeze(own_redis)
    assert _ends_within(sender, DEADLINE) == 1
    elapsed = time.monotonic() - frozen_at
    last = _one_error_line(sender.output())
    assert "BackendTimeout" in last
    assert f"did not answer for {TIMEOUT:.0f} s (--timeout {TIMEOUT:g})" in last
    assert elapsed >= TIMEOUT - 0.5, f"gave up after {elapsed:.1f} s"

    _thaw(own_redis)  # the same command resumes the transfer
    again = run_cli(*args, tmp_path=tmp_path, url=url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert finish(recv.proc) == 0, recv.output()
    assert (out / "big.bin").read_bytes() == original.read_bytes()


def test_frozen_redis_before_send_starts_fails_within_its_timeout(
    tmp_path: Path, own_redis: EmbeddedRedis, reap: Callable[[Running], Running]
) -> None:
    payload = random_file(tmp_path / "small.bin", 1000)
    _freeze(own_redis)
    started = time.monotonic()
    sender = reap(start_cli(
        "send", str(payload), "--to", "site", "--timeout", f"{TIMEOUT:g}",
        tmp_path=tmp_path, url=own_redis.url,
    ))  # fmt: skip
    # The interpreter's start-up counts against the deadline here.
    assert _ends_within(sender, DEADLINE) == 1
    last = _one_error_line(sender.output())
    assert "did not answer" in last, last
    assert time.monotonic() - started < DEADLINE

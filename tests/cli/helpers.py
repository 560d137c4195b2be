"""Driving ``framework`` as a subprocess, as a user would."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

#: A password with characters that URLs reserve, written into URLs unencoded.
PASSWORD = "pa/ss?w0rd#1"
ROOT = Path(__file__).resolve().parents[2]
#: Seconds any one CLI run in these tests may take before the test fails.
RUN_TIMEOUT = 120
MiB = 1 << 20


def random_file(path: Path, size: int) -> Path:
    """``path`` filled with ``size`` random bytes."""
    path.write_bytes(os.urandom(size))
    return path


def partial_size(out: Path) -> int:
    """Size of the (first) partial ``.NAME.ID.part`` file in ``out``, 0 if none."""
    parts = list(out.glob(".*.part"))
    try:
        return parts[0].stat().st_size if parts else 0
    except FileNotFoundError:  # renamed into place (or removed) meanwhile
        return 0


def cli_env(tmp_path: Path, url: str | None = None) -> dict[str, str]:
    """The environment of a CLI run: no inherited Redis URL, unbuffered, private state."""
    env = {k: v for k, v in os.environ.items() if k != "FRAMEWORK_REDIS_URL"}
    env.update(PYTHONUNBUFFERED="1", FRAMEWORK_STATE_DIR=str(tmp_path / "state"), COLUMNS="120")
    if url is not None:
        env["FRAMEWORK_REDIS_URL"] = url
    return env


def run_cli(
    *args: str,
    tmp_path: Path,
    url: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m framework ARGS`` to completion (in the checkout unless ``cwd``)."""
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env=env or cli_env(tmp_path, url),
        cwd=cwd or ROOT,
        check=False,
    )


class Running(NamedTuple):
    """A CLI process started in the background and the file its output goes to."""

    proc: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        """Everything it printed so far (stdout and stderr)."""
        return self.log.read_text()


def start_cli(*args: str, tmp_path: Path, url: str | None = None) -> Running:
    """Start ``python -m framework ARGS`` in the background."""
    log = tmp_path / f"{args[0]}.{time.monotonic_ns()}.log"
    with log.open("w") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "framework", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=cli_env(tmp_path, url),
        )
    return Running(proc, log)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll until ``condition()`` holds; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out waiting for {what}.")
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str], sig: int | None = None) -> int:
    """Optionally signal ``proc``, then reap it (killing it if it hangs)."""
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args} did not exit after signal {sig}.")


def run_in_terminal(
    *args: str, tmp_path: Path, url: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m framework ARGS`` with a pseudo-terminal as stdout and stderr.

    Only a terminal shows what a user sees: writing to a pipe, click strips escape
    sequences and rich draws no live progress. Both outputs arrive interleaved in
    ``stdout``.
    """
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "framework", *args],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        env=cli_env(tmp_path, url),
        cwd=ROOT,
    )
    os.close(secondary)  # the child holds the only copy: reading ends when it exits
    output = bytearray()
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if not select.select([primary], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(primary, 1 << 16)
            except OSError:  # EIO: the terminal's last writer is gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(primary)
    if proc.poll() is None and time.monotonic() >= deadline:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args} did not finish within {RUN_TIMEOUT} s.")
    return subprocess.CompletedProcess(proc.args, proc.wait(RUN_TIMEOUT), bytes(output), b"")

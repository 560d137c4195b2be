"""Option values a command cannot use fail at parsing: a usage error (status 2) naming
the option, before anything connects or starts; never an unexpected error later."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from framework.cli import main

UNREACHABLE = "redis://127.0.0.1:1/0"


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), env={"FRAMEWORK_REDIS_URL": UNREACHABLE})
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--limit-rate", ""),  # was IndexError
        ("--limit-rate", "inf"),  # was OverflowError
        ("--limit-rate", "M"),
        ("--limit-rate", "nan"),
        ("--timeout", "nan"),  # was a pydantic dump from CellConfig
        ("--timeout", "inf"),  # waited forever for a receiver that never came
        ("--timeout", "1e9"),
    ],
)
def test_send_refuses_unusable_values(option: str, value: str, tmp_path: Path) -> None:
    payload = tmp_path / "f.bin"
    payload.write_bytes(b"x")
    code, output = _invoke("send", str(payload), "--to", "site", option, value)
    assert code == 2, output
    assert f"Invalid value for '{option}'" in output
    assert "Unexpected" not in output


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_recv_refuses_unusable_timeouts(value: str, tmp_path: Path) -> None:
    # --timeout nan ended at once with "No file arrived or progressed for nan s".
    code, output = _invoke("recv", "--as", "site", "--out", str(tmp_path), "--timeout", value)
    assert code == 2, output
    assert "Invalid value for '--timeout'" in output


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_check_refuses_unusable_sizes(value: str) -> None:
    code, output = _invoke("check", "--size-mb", value)
    assert code == 2, output
    assert "Invalid value for '--size-mb'" in output


@pytest.mark.parametrize(("value", "rate"), [("2K", 2048), ("1.5MB", 3 << 19), ("7", 7)])
def test_rates_that_parse(value: str, rate: int) -> None:
    from framework.cli._send import ByteRate

    assert ByteRate().convert(value, None, None) == rate


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_send_refuses_what_is_not_a_regular_file(kind: str, tmp_path: Path) -> None:
    """A FIFO blocked send for good before any transfer; /dev/zero was hashed forever."""
    if kind == "fifo":
        path = tmp_path / "pipe"
        os.mkfifo(path)
    else:
        path = Path("/dev/zero")
    code, output = _invoke("send", str(path), "--to", "b")
    assert code == 2, output
    assert f"{path} is not a regular file (a pipe, device or socket)" in output

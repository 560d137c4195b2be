"""Names that others chose (files, cells, keys in Redis) are printed as they are: never read
as rich markup, and with control characters shown as ``\\x1b``, never sent to the terminal."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from tests.cli.helpers import Running, finish, run_cli, run_in_terminal, start_cli

ESC = "\x1b[2J"  # clears the screen when it reaches a terminal
SHOWN_ESC = "\\x1b[2J"
CELL = "[/]site[bold]"  # "[/]" alone makes rich raise MarkupError
NAMES = ["[bold]x.bin", f"e{ESC}x.bin", ":fire:.bin", "tab\there.bin"]


def _shown(name: str) -> str:
    return name.replace(ESC, SHOWN_ESC).replace("\t", "\\t")


def test_markup_and_escapes_in_file_and_cell_names_print_literally(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    files = tmp_path / "files"
    files.mkdir()
    paths = [files / name for name in NAMES]
    for number, path in enumerate(paths):
        path.write_bytes(b"%d" % number * 100)
    out = tmp_path / "out"
    recv = reap(start_cli(
        "recv", "--as", CELL, "--out", str(out), "--count", str(len(NAMES)),
        "--timeout", "60", tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    sent = run_cli("send", *map(str, paths), "--to", CELL, tmp_path=tmp_path, url=redis_url)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert finish(recv.proc) == 0, recv.output()

    received = recv.output()
    for output in (sent.stdout + sent.stderr, received):
        assert "\x1b" not in output  # rich adds no colour on a pipe: any ESC came from a name
        assert "\t" not in output
    for name in NAMES:
        assert f"Sent {_shown(name)} (" in sent.stdout
        assert f"Received {out / _shown(name)} (SHA-256 verified)" in received
        assert (out / name).read_bytes() == (files / name).read_bytes()
    assert f"Receiving as cell {CELL!r}" in received


def test_a_failing_send_shows_the_names_in_its_error_on_a_terminal(
    tmp_path: Path, redis_url: str
) -> None:
    path = tmp_path / f"e{ESC}x.bin"
    path.write_bytes(b"x" * 100)
    done = run_in_terminal(
        "send", str(path), "--to", f"{CELL}{ESC}", "--timeout", "1",
        tmp_path=tmp_path, url=redis_url,
    )  # fmt: skip
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 1, output
    assert ESC not in output  # click writes escapes through to a terminal
    assert "Traceback" not in output
    expected = f"Error: e{SHOWN_ESC}x.bin: no receiver among {CELL}{SHOWN_ESC} made progress"
    assert expected in output, output


def test_inspect_prints_names_from_redis_literally(
    tmp_path: Path, redis_url: str, admin: redis.Redis
) -> None:
    cell = f"{CELL}{ESC}"
    admin.xadd(f"fw:cell:{{{cell}}}:inbox", {"k": "v"})
    done = run_in_terminal("inspect", tmp_path=tmp_path, url=redis_url)
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    assert ESC not in output
    assert f"{CELL}{SHOWN_ESC}" in output

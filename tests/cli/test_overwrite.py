"""``framework recv`` never replaces a file: neither one already in its directory nor one
that arrived earlier under the same name; a copy with the same content is kept once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.cli.helpers import Running, finish, run_cli, start_cli


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_files_with_one_name_and_a_file_from_before_all_survive(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    out = tmp_path / "incoming"
    before = _write(out / "report.bin", b"was here before")
    first = _write(tmp_path / "a" / "report.bin", b"report from a" * 1000)
    second = _write(tmp_path / "b" / "report.bin", b"report from b" * 1000)
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(out), "--count", "3", "--timeout", "60",
        tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    both = run_cli(
        "send", str(first), str(second), "--to", "site", tmp_path=tmp_path, url=redis_url
    )
    assert both.returncode == 0, both.stdout + both.stderr
    again = run_cli("send", str(first), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert finish(recv.proc) == 0, recv.output()

    assert before.read_bytes() == b"was here before"
    arrived = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "report.bin"}
    assert sorted(arrived.values()) == sorted([first.read_bytes(), second.read_bytes()])
    assert set(arrived) == {"report (1).bin", "report (2).bin"}  # the resend added nothing
    output = recv.output()
    assert "as " + str(out / "report (1).bin") in output
    assert "as " + str(out / "report (2).bin") in output
    assert "already there as" in output
    assert "'report (1).bin'" in both.stdout  # the sender is told up front


def test_names_of_255_bytes_arrive_and_get_numbered_within_the_limit(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    # The longest names Linux takes: ".NAME.ID.part" and "NAME (1)" must still fit.
    ascii_name = "a" * 251 + ".bin"
    wide_name = "é" * 125 + ".bin"  # 254 bytes of UTF-8
    files = [
        _write(tmp_path / d / name, f"{d}/{name}".encode() * 100)
        for d in ("a", "b")
        for name in (ascii_name, wide_name)
    ]
    out = tmp_path / "incoming"
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(out), "--count", "4", "--timeout", "60",
        tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    sent = run_cli("send", *map(str, files), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert finish(recv.proc) == 0, recv.output()
    arrived = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(arrived.values()) == sorted(f.read_bytes() for f in files)
    assert all(len(name.encode()) <= 255 for name in arrived)
    assert {ascii_name, wide_name} <= set(arrived)


def test_a_path_given_twice_is_sent_once(
    tmp_path: Path, redis_url: str, reap: Callable[[Running], Running]
) -> None:
    # A second transfer of one file would resume the first, still running, in the same send.
    # A path longer than a line: the note names it whole, on one line (output is piped).
    folder = tmp_path / ("a" * 90)
    data = _write(folder / "dup.bin", b"once" * 100_000)
    out = tmp_path / "incoming"
    recv = reap(start_cli(
        "recv", "--as", "site", "--out", str(out), "--count", "1", "--timeout", "60",
        tmp_path=tmp_path, url=redis_url,
    ))  # fmt: skip
    alias = folder / "." / "dup.bin"
    sent = run_cli("send", str(data), str(alias), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"Note: {alias} is given more than once; it is sent once.\n" in sent.stdout
    assert "resume" not in sent.stdout
    assert finish(recv.proc) == 0, recv.output()
    assert [p.name for p in out.iterdir()] == ["dup.bin"]
    assert (out / "dup.bin").read_bytes() == data.read_bytes()

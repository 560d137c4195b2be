"""``framework send`` / ``framework recv`` as processes on real Redis: verified delivery,
fan-out from one upload, atomic writes, and resuming after either side is SIGKILLed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import redis

from framework.cli._common import SHOWN_BARS
from tests.cli.helpers import Running, finish, run_cli, start_cli, wait_for

MiB = 1 << 20


def _file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def _recv(tmp_path: Path, url: str, cell: str, count: int = 1) -> Running:
    out = tmp_path / f"out-{cell}"
    return start_cli(
        "recv",
        "--as",
        cell,
        "--out",
        str(out),
        "--count",
        str(count),
        "--timeout",
        "60",
        tmp_path=tmp_path,
        url=url,
    )


def _partial(out: Path) -> int:
    parts = list(out.glob(".*.part"))
    return parts[0].stat().st_size if parts else 0


def test_files_reach_every_target_from_one_upload(
    tmp_path: Path, user_url: str, admin: redis.Redis
) -> None:
    files = [_file(tmp_path / "weights.bin", 3 * MiB + 17), _file(tmp_path / "empty.txt", 0)]
    receivers = [_recv(tmp_path, user_url, cell, count=2) for cell in ("site-a", "site-b")]
    done = run_cli(
        "send",
        *map(str, files),
        "--to",
        "site-a",
        "--to",
        "site-b",
        tmp_path=tmp_path,
        url=user_url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Sent weights.bin (3,145,745 bytes" in done.stdout
    for run, cell in zip(receivers, ("site-a", "site-b"), strict=True):
        assert finish(run.proc) == 0, run.output()
        assert "Received" in run.output()
        assert "SHA-256 verified" in run.output()
        for original in files:
            assert (tmp_path / f"out-{cell}" / original.name).read_bytes() == original.read_bytes()
        assert not list((tmp_path / f"out-{cell}").glob(".*"))  # no partial file left
    # One upload: every transfer had both cells as targets (the data went in once).
    assert not admin.keys("fw:xfer:*")  # finished transfers delete their keys


def test_receiver_killed_mid_file_resumes_to_an_identical_file(
    tmp_path: Path, redis_url: str
) -> None:
    original = _file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out-site"
    send = start_cli(
        "send",
        str(original),
        "--to",
        "site",
        "--limit-rate",
        "10M",
        tmp_path=tmp_path,
        url=redis_url,
    )
    first = _recv(tmp_path, redis_url, "site")
    wait_for(lambda: _partial(out) > 9 * MiB, "the receiver to write part of the file")
    finish(first.proc, signal.SIGKILL)
    assert not (out / "big.bin").exists()  # a partial file never has the final name
    second = _recv(tmp_path, redis_url, "site")
    assert finish(second.proc) == 0, second.output()
    assert finish(send.proc) == 0, send.output()
    assert (out / "big.bin").read_bytes() == original.read_bytes()


def test_a_receiver_restarted_with_another_out_says_where_the_partial_file_is(
    tmp_path: Path, redis_url: str
) -> None:
    """Before: "FileNotFoundError: [Errno 2] No such file or directory: '.../.big.bin...'"."""
    original = _file(tmp_path / "big.bin", 24 * MiB)
    args = ("send", str(original), "--to", "site", "--limit-rate", "10M")
    send = start_cli(*args, tmp_path=tmp_path, url=redis_url)
    first = _recv(tmp_path, redis_url, "site")
    wait_for(lambda: _partial(tmp_path / "out-site") > 9 * MiB, "part of the file")
    finish(first.proc, signal.SIGKILL)
    other = tmp_path / "elsewhere"
    second = start_cli(
        "recv", "--as", "site", "--out", str(other), "--count", "1", "--timeout", "60",
        tmp_path=tmp_path, url=redis_url,
    )  # fmt: skip
    assert finish(second.proc) == 1, second.output()
    assert "Cannot continue 'big.bin' after byte" in second.output()
    assert "Was it received into another --out directory?" in second.output()
    assert "FileNotFoundError" not in second.output()
    assert finish(send.proc) == 1  # the sender hears why


def _send_killed_mid_file(
    tmp_path: Path, redis_url: str
) -> tuple[Path, Path, tuple[str, ...], Running]:
    """A 24 MiB file, a receiver, and a send killed once part of the file arrived.

    Returns:
        The file, the receiver's directory, the send's arguments and the receiver.
    """
    original = _file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out-site"
    args = ("send", str(original), "--to", "site", "--limit-rate", "12M")
    receiver = _recv(tmp_path, redis_url, "site")
    first = start_cli(*args, tmp_path=tmp_path, url=redis_url)
    wait_for(lambda: _partial(out) > 9 * MiB, "the receiver to get part of the file")
    finish(first.proc, signal.SIGKILL)
    return original, out, args, receiver


def test_sender_killed_mid_file_resumes_when_rerun(tmp_path: Path, redis_url: str) -> None:
    original, out, args, receiver = _send_killed_mid_file(tmp_path, redis_url)
    again = run_cli(*args, tmp_path=tmp_path, url=redis_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume big.bin" in again.stdout
    assert finish(receiver.proc) == 0, receiver.output()
    assert (out / "big.bin").read_bytes() == original.read_bytes()


def test_a_file_changed_in_place_after_a_killed_send_is_sent_afresh(
    tmp_path: Path, redis_url: str
) -> None:
    """Changed with its size and modification time kept (``cp -p``, ``rsync -t``), the
    file was resumed as the old transfer: the receiver got the old content, which
    matched the old hash, while send printed the new one."""
    original, out, args, receiver = _send_killed_mid_file(tmp_path, redis_url)
    stat = original.stat()
    with original.open("r+b") as file:
        file.write(b"NEW VERSION" * 1000)
    os.utime(original, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = run_cli(*args, tmp_path=tmp_path, url=redis_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resume big.bin" not in again.stdout
    wait_for(lambda: (out / "big.bin").exists(), "the new version", timeout=90)
    assert (out / "big.bin").read_bytes() == original.read_bytes()
    finish(receiver.proc, signal.SIGINT)


def test_recv_timeout_after_files_arrived_is_a_success(tmp_path: Path, redis_url: str) -> None:
    """``recv --timeout`` drains what comes; before, it exited 1 saying no file arrived."""
    out = tmp_path / "drained"
    run = start_cli(
        "recv", "--as", "drain", "--out", str(out), "--timeout", "2",
        tmp_path=tmp_path, url=redis_url,
    )  # fmt: skip
    wait_for(lambda: "Receiving as cell" in run.output(), "recv to start")
    sent = _file(tmp_path / "one.bin", 1000)
    done = run_cli("send", str(sent), "--to", "drain", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stderr
    assert finish(run.proc) == 0, run.output()
    assert "No new file for 2 s; 1 received." in run.output()
    assert (out / "one.bin").read_bytes() == sent.read_bytes()


def test_recv_timeout_without_any_file_fails(tmp_path: Path, redis_url: str) -> None:
    done = run_cli(
        "recv", "--as", "idle", "--out", str(tmp_path / "o"), "--count", "2", "--timeout", "1",
        tmp_path=tmp_path, url=redis_url,
    )  # fmt: skip
    assert done.returncode == 1
    assert "No file arrived or progressed for 1 s (0 of 2 files came)." in done.stderr
    # Only the greeting: the progress display of no file printed an empty line.
    assert done.stdout.splitlines()[1:] == [], done.stdout


def test_a_part_whose_transfer_expired_while_both_were_away_is_deleted(
    tmp_path: Path, redis_url: str, admin: redis.Redis
) -> None:
    """Both sides killed, and the transfer's keys expired before ``recv`` came back.

    The cell dropped the announcement without a callback, so the partial file stayed
    in the directory for good while a fresh send delivered the file beside it.
    """
    original = _file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out-site"
    stray = out / ".other.bin.12345.part"  # not named by this cell's inbox: kept
    args = ("send", str(original), "--to", "site", "--limit-rate", "10M")
    receiver = _recv(tmp_path, redis_url, "site")
    sender = start_cli(*args, tmp_path=tmp_path, url=redis_url)
    wait_for(lambda: _partial(out) > 4 * MiB, "the receiver to write part of the file")
    finish(sender.proc, signal.SIGKILL)
    finish(receiver.proc, signal.SIGKILL)
    stray.write_bytes(b"x")
    [lost] = list(out.glob(".big.bin.*.part"))
    for key in admin.scan_iter("fw:xfer:*"):  # what their TTL does a minute later
        admin.delete(key)
    again = run_cli(
        "recv", "--as", "site", "--out", str(out), "--timeout", "1",
        tmp_path=tmp_path, url=redis_url,
    )  # fmt: skip
    assert f"Dropped the partial {lost.name}" in again.stdout, again.stdout + again.stderr
    assert not lost.exists()
    assert stray.exists()
    # The same send, run again, starts afresh; nothing partial is left beside the file.
    receiver = _recv(tmp_path, redis_url, "site")
    assert run_cli(*args, tmp_path=tmp_path, url=redis_url).returncode == 0
    assert finish(receiver.proc) == 0, receiver.output()
    assert (out / "big.bin").read_bytes() == original.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [stray.name, "big.bin"]


def test_a_file_delivered_before_the_sender_was_killed_is_not_sent_again(
    tmp_path: Path, redis_url: str
) -> None:
    """Run again after a SIGKILL, the command continues: it used to send the file again."""
    small, big = _file(tmp_path / "small.bin", 1000), _file(tmp_path / "big.bin", 24 * MiB)
    out = tmp_path / "out-site"
    args = ("send", str(small), str(big), "--to", "site", "--limit-rate", "10M")
    receiver = _recv(tmp_path, redis_url, "site", count=2)
    first = start_cli(*args, tmp_path=tmp_path, url=redis_url)
    wait_for(lambda: _partial(out) > 4 * MiB, "the receiver to write part of the big file")
    assert (out / "small.bin").read_bytes() == small.read_bytes()
    finish(first.proc, signal.SIGKILL)
    again = run_cli(*args, tmp_path=tmp_path, url=redis_url)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Sent small.bin (1,000 bytes" in again.stdout
    assert "by the interrupted run of this command" in again.stdout
    assert "resume big.bin" in again.stdout
    assert finish(receiver.proc) == 0, receiver.output()
    received = [line for line in receiver.output().splitlines() if line.startswith("Received")]
    assert sum("small.bin" in line for line in received) == 1, receiver.output()
    assert (out / "big.bin").read_bytes() == big.read_bytes()
    # Through, the command sends every file again when it is run once more.
    receiver = _recv(tmp_path, redis_url, "site", count=2)
    third = run_cli(*args[:3], "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert "interrupted" not in third.stdout, third.stdout
    assert finish(receiver.proc) == 0, receiver.output()
    assert receiver.output().count("kept once") == 2, receiver.output()


def test_any_posix_file_name_arrives_byte_for_byte(tmp_path: Path, redis_url: str) -> None:
    """A backslash, and bytes that are not UTF-8, are part of valid POSIX names.

    Before, recv refused ``back\\slash.txt``, and a Latin-1 name aborted the whole send
    (its headers could not be JSON), the files after it never sent.
    """
    src = tmp_path / "src"
    src.mkdir()
    names = [b"back\\slash.txt", b"caf\xe9 \xff.txt", b"plain.txt"]
    files = [_file(src / os.fsdecode(name), 10 + i) for i, name in enumerate(names)]
    receiver = _recv(tmp_path, redis_url, "site", count=len(files))
    done = run_cli("send", *map(str, files), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Sent caf\\xe9 \\xff.txt (11 bytes" in done.stdout  # each raw byte shown as \xNN
    assert finish(receiver.proc) == 0, receiver.output()
    out = tmp_path / "out-site"
    assert sorted(os.listdir(os.fsencode(out))) == sorted(names)
    for name, original in zip(names, files, strict=True):
        assert (out / os.fsdecode(name)).read_bytes() == original.read_bytes()


def test_a_file_whose_size_the_system_gives_as_zero_is_reported_by_its_content(
    tmp_path: Path, redis_url: str
) -> None:
    """Files of /proc have a size of 0: send said "Sent version (0 bytes, ...)"."""
    source = Path("/proc/version")  # its content does not change between reads
    content = source.read_bytes()
    assert source.stat().st_size == 0 < len(content)
    receiver = _recv(tmp_path, redis_url, "site", count=1)
    done = run_cli("send", str(source), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Sent version ({len(content):,} bytes" in done.stdout
    assert finish(receiver.proc) == 0, receiver.output()
    assert (tmp_path / "out-site" / "version").read_bytes() == content


def test_many_files_show_a_bounded_number_of_bars(tmp_path: Path, redis_url: str) -> None:
    """rich redraws every bar each time: a bar kept per file made time grow quadratically.

    A run that is not on a terminal prints its bars once, at the end: the ones visible.
    """
    count = SHOWN_BARS * 3
    files = [_file(tmp_path / f"f{i:02}.txt", 5) for i in range(count)]
    receiver = _recv(tmp_path, redis_url, "site", count=count)
    done = run_cli("send", *map(str, files), "--to", "site", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert finish(receiver.proc) == 0, receiver.output()
    for output, line in ((done.stdout, "Sent f"), (receiver.output(), "Received ")):
        lines = output.splitlines()
        assert sum(text.startswith(line) for text in lines) == count, output
        assert 0 < sum("━" in text for text in lines) <= SHOWN_BARS, output
    assert len(list((tmp_path / "out-site").iterdir())) == count


def test_files_that_reached_some_targets_are_not_called_undelivered(
    tmp_path: Path, redis_url: str
) -> None:
    """Before: "Error: 2 of 2 files were not delivered." while both had reached 'site'."""
    files = [_file(tmp_path / f"f{i}.bin", 1000 + i) for i in range(2)]
    receiver = _recv(tmp_path, redis_url, "site", count=2)
    args = ("send", *map(str, files), "--to", "site", "--to", "ghost", "--timeout", "3")
    done = run_cli(*args, tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 1
    assert "2 of 2 files did not reach every target." in done.stderr
    assert done.stderr.count("whole, but not ['ghost']") == 2, done.stderr
    assert finish(receiver.proc) == 0, receiver.output()

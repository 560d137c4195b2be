"""Where ``framework recv`` puts a verified file: the first free name, never over another."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from framework.cell import BytesStream, Message, StreamCell
from framework.cli._receiving import (
    FileEvent,
    FileReceiver,
    fitted,
    numbered,
    part_path,
    place,
    safe_name,
)
from framework.cli._transfer import CHANNEL, NAME_BYTES, TOPIC, FileOffer, file_name
from framework.connection import RedisConnection
from framework.exceptions import StreamError


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_numbered_names_keep_extensions_and_hidden_names() -> None:
    assert numbered("report.bin", 0) == "report.bin"
    assert numbered("report.bin", 1) == "report (1).bin"
    assert numbered("model.tar.gz", 2) == "model (2).tar.gz"
    assert numbered(".bashrc", 1) == ".bashrc (1)"
    assert numbered("README", 3) == "README (3)"


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_place_takes_the_first_free_name_and_never_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool
) -> None:
    if not links:  # as on FAT or some network file systems

        def no_link(*_: object) -> None:
            raise PermissionError("hard links are not supported here")

        monkeypatch.setattr(os, "link", no_link)
    (tmp_path / "x.bin").write_bytes(b"old")
    (tmp_path / "x (1).bin").mkdir()  # a directory takes a name too
    part = _write(tmp_path / ".x.bin.7.part", b"new")
    final, how = place(part, tmp_path, "x.bin", hashlib.sha256(b"new").hexdigest())
    assert (final.name, how) == ("x (2).bin", "renamed")
    assert final.read_bytes() == b"new"
    assert (tmp_path / "x.bin").read_bytes() == b"old"
    assert not part.exists()


def test_place_keeps_one_copy_of_identical_content(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"same")
    part = _write(tmp_path / ".x.bin.8.part", b"same")
    final, how = place(part, tmp_path, "x.bin", hashlib.sha256(b"same").hexdigest())
    assert (final.name, how) == ("x.bin", "identical")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_numbered_and_partial_names_fit_the_file_name_limit() -> None:
    long = "x" * 251 + ".bin"
    assert numbered(long, 1) == "x" * 247 + " (1).bin"
    wide = "é" * 125 + ".bin"  # 254 bytes: the cut falls between characters
    assert numbered(wide, 12).encode() == ("é" * 123).encode() + b" (12).bin"
    assert len(numbered("n." + "e" * 300, 1).encode()) <= 255  # an absurd extension
    assert fitted(".a", ".7.part") == ".a.7.part"
    assert len(fitted("." + long, ".12345678901234567890.part").encode()) == 255


def test_a_name_that_is_not_utf8_travels_as_its_bytes(tmp_path: Path) -> None:
    path = _write(tmp_path / os.fsdecode(b"caf\xe9.txt"), b"x")
    headers = FileOffer.of(path).headers()
    assert headers["name"] == "caf\ufffd.txt"  # readable, for receivers of older releases
    assert os.fsencode(str(file_name(headers))) == b"caf\xe9.txt"
    assert NAME_BYTES not in FileOffer.of(_write(tmp_path / "café.txt", b"x")).headers()
    assert file_name({"name": "n.txt"}) == "n.txt"
    with pytest.raises(StreamError, match="not base64"):
        file_name({"name": "n.txt", NAME_BYTES: "%%%"})
    raw = b"\xff" * 300  # cut to fit, still the bytes it was
    assert os.fsencode(numbered(os.fsdecode(raw), 1)) == b"\xff" * 251 + b" (1)"
    assert len(os.fsencode(part_path(tmp_path, os.fsdecode(raw), 7).name)) == 255


def test_safe_names_keep_backslashes_and_refuse_what_escapes(tmp_path: Path) -> None:
    assert safe_name("back\\slash.txt") == "back\\slash.txt"  # no separator on POSIX
    assert safe_name("../../etc/passwd") == "passwd"
    for bad in ("", ".", "..", "a/..", "nul\x00.txt", None, 7):
        with pytest.raises(StreamError, match="Refusing"):
            safe_name(bad)


def test_a_file_whose_directory_refuses_it_is_reported_and_counted(
    conn: RedisConnection, tmp_path: Path
) -> None:
    # A regular file where the directory should be: writing the partial file fails, and so
    # does removing it (ENOTDIR), as both do on a read-only file system (EROFS).
    blocked = _write(tmp_path / "not-a-directory", b"")
    events: list[FileEvent] = []
    receiver = FileReceiver(blocked, events.append)
    data = b"payload"
    headers = {"name": "x.txt", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with StreamCell(conn, "rx") as rx, StreamCell(conn, "tx") as tx:
        rx.register_stream_cb(CHANNEL, TOPIC, receiver)
        future = tx.send_stream(CHANNEL, TOPIC, ["rx"], Message(headers, BytesStream(data)))
        with pytest.raises(StreamError, match="Not a directory"):
            future.result(timeout=30)
        with receiver.changed:  # what `recv --count N` waits on
            assert receiver.changed.wait_for(lambda: receiver.failed, timeout=30)
    assert (receiver.failed, receiver.finished) == (1, 0)
    (event,) = events
    assert (event.kind, event.name) == ("error", "x.txt")
    assert "Not a directory" in event.detail

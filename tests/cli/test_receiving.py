"""Where ``framework recv`` puts a verified file: the first free name, never over another."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from framework.cli._receiving import fitted, numbered, place


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

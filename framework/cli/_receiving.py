"""What ``framework recv`` does with each file, without UI (the protocol: :mod:`._transfer`).

* **Atomic writes.** The receiver writes ``.<name>.<stream id>.part`` in the output
  directory, checks the SHA-256 of the whole file, fsyncs it and only then gives it its
  name; a file with a final name is always complete and verified. A stream that ends
  unfinished (the sender cancelled or failed, or a check failed) takes its partial file
  with it; only a receiver that stops keeps it, to resume.
* **No overwrites.** A file never replaces one already in the directory, nor one that
  arrived earlier under the same name: when the name is taken by identical content the
  new copy is dropped, otherwise the file gets the first free name among
  ``<stem> (1).<ext>``, ``<stem> (2).<ext>``... (see :func:`place`).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from framework.cell import Stream, StreamFuture
from framework.cli._transfer import READ_SIZE, file_name
from framework.exceptions import ChecksumError, ClosedError, StreamCancelled, StreamError

__all__ = ["FileEvent", "FileReceiver", "fitted", "numbered", "part_path", "place", "safe_name"]

#: Numbered names tried for a file whose name is taken, before the file fails.
MAX_NUMBERED = 9999
#: Longest file name, in bytes of UTF-8, that common file systems take (ext4, XFS, APFS).
NAME_MAX = 255


def _encoded(name: str) -> bytes:
    """The bytes of ``name`` on disk (a name that is not UTF-8 holds escaped bytes)."""
    return name.encode("utf-8", "surrogateescape")


def fitted(stem: str, tail: str) -> str:
    """``stem + tail``, the stem cut (between characters) so that it fits :data:`NAME_MAX`.

    A name the sender's file system took can still be too long once the receiver adds
    to it (``.NAME.ID.part``, ``NAME (1)``): the addition is kept whole.
    """
    room = NAME_MAX - len(_encoded(tail))
    encoded = _encoded(stem)
    if len(encoded) <= room:
        return stem + tail
    end = max(room, 1)
    while end > 1 and encoded[end] & 0xC0 == 0x80:  # not inside a UTF-8 character
        end -= 1
    return encoded[:end].decode("utf-8", "surrogateescape") + tail


def safe_name(name: object) -> str:
    r"""The last path component of a received name; refuses names that escape the directory.

    Any other name is taken, also one that is not UTF-8 and, where ``\`` is no path
    separator (POSIX), one holding a backslash.

    Raises:
        StreamError: If nothing usable remains.
    """
    base = PurePosixPath(name).name if isinstance(name, str) else ""
    separators = {os.sep, os.altsep or os.sep}
    if base in ("", ".", "..") or "\x00" in base or separators & set(base):
        raise StreamError(f"Refusing to write a file named {name!r}.")
    return base


def part_path(out_dir: Path, name: object, sid: int) -> Path:
    """Where the file ``name`` of stream ``sid`` is written until it is verified.

    Raises:
        StreamError: If ``name`` is not usable (see :func:`safe_name`).
    """
    return out_dir / fitted(f".{safe_name(name)}", f".{sid}.part")


@dataclass(frozen=True)
class FileEvent:
    """A report of :class:`FileReceiver` (made in the stream's receiving thread).

    Attributes:
        kind: ``start``, ``progress``, ``done``, ``error``; ``cancelled`` when the
            sender cancelled; ``paused`` when this receiver stopped (it can resume).
        name: The file's name as the sender gave it (escape it before printing).
        sid: The stream's id (names need not be unique).
        done: Bytes received so far.
        total: The file's size.
        path: ``done``: where the file is now.
        detail: ``done``: ``renamed`` (the name was taken) or ``identical`` (a file
            with the same content was there already); else the error.
    """

    kind: str
    name: str
    sid: int
    done: int = 0
    total: int = 0
    path: Path | None = None
    detail: str = ""


Events = Callable[[FileEvent], None]


class FileReceiver:
    """The ``stream_cb`` of ``framework recv``: writes, verifies and places each file.

    Args:
        out_dir: Where files land.
        on_event: Progress and outcome reports (called from receiver threads).

    Attributes:
        finished: Files placed. ``failed``: files that failed on this side or the
            sender's; a cancelled or paused file counts as neither.
    """

    def __init__(self, out_dir: Path, on_event: Events) -> None:
        self.out_dir = out_dir
        self.on_event = on_event
        self.finished = 0
        self.failed = 0
        self.changed = threading.Condition()

    def __call__(self, future: StreamFuture, stream: Stream, resume_offset: int) -> None:
        """Receive one file (runs in the stream's own thread); errors reach the sender."""
        headers = future.get_headers() or {}
        name, sid = str(headers.get("name")), future.get_stream_id()
        part: Path | None = None
        try:
            base = safe_name(file_name(headers))
            part = part_path(self.out_dir, base, sid)
            final, how = self._receive(
                part, FileEvent("start", base, sid), headers, stream, resume_offset
            )
        except ClosedError:
            # This receiver is stopping: the partial file stays for the next `recv`.
            self.on_event(FileEvent("paused", name, sid, stream.get_pos()))
            raise
        except BaseException as exc:
            # The stream is over (cancelled, failed, refused): its part can never resume.
            kind = "cancelled" if isinstance(exc, StreamCancelled) else "error"
            try:
                detail = f"{type(exc).__name__}: {exc}{_discard(part)}"
                self.on_event(FileEvent(kind, name, sid, detail=detail))
            finally:
                # Counted even if the report failed: `recv --count N` must see the end.
                self._count(failed=kind == "error")
            raise
        self.on_event(FileEvent("done", name, sid, path=final, detail=how))
        self._count(finished=True)

    def _count(self, *, failed: bool = False, finished: bool = False) -> None:
        with self.changed:
            self.failed += failed
            self.finished += finished
            self.changed.notify_all()

    def _receive(
        self, part: Path, start: FileEvent, headers: dict[str, Any], stream: Stream, offset: int
    ) -> tuple[Path, str]:
        size = int(headers.get("size", -1))
        hasher = hashlib.sha256()
        if offset and not part.exists():
            raise StreamError(
                f"Cannot continue {start.name!r} after byte {offset:,}: its partial file "
                f"{part.name!r} is not in {str(self.out_dir)!r}. Was it received into "
                "another --out directory? Run recv with that one, or send the file again."
            )
        with part.open("r+b" if offset else "wb") as file:
            if offset:
                _rehash(file, hasher, offset, part)
            self.on_event(replace(start, done=offset, total=size))
            done = offset
            while chunk := stream.read(READ_SIZE):
                file.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                self.on_event(replace(start, kind="progress", done=done, total=size))
            file.flush()
            os.fsync(file.fileno())
        sha256 = str(headers.get("sha256"))
        if hasher.hexdigest() != sha256:
            raise ChecksumError(
                f"{start.name!r}: the received bytes' SHA-256 differs from the sender's; "
                "the partial file was removed."
            )
        return place(part, self.out_dir, start.name, sha256)


def _discard(part: Path | None) -> str:
    """Remove the partial file of a stream that is over; what was left behind, if anything.

    Never raises: the directory that refused the file (read-only, full, gone) may refuse
    the removal too, and the file's failure must still be reported and counted.
    """
    if part is None:
        return ""
    try:
        part.unlink(missing_ok=True)
    except OSError as exc:
        if not os.path.lexists(part):  # EROFS and the like for a part never created
            return ""
        return f" (the partial file {str(part)!r} could not be removed: {exc.strerror or exc})"
    return ""


def numbered(name: str, number: int) -> str:
    """``name`` with `` (number)`` before its extensions: ``report (1).tar.gz``; 0 keeps it.

    Leading dots belong to the stem, so ``.bashrc`` becomes ``.bashrc (1)``.
    """
    if not number:
        return name
    bare = name.lstrip(".")
    stem, dot, extensions = bare.partition(".")
    tail = f" ({number}){dot}{extensions}"
    if len(_encoded(tail)) > NAME_MAX // 2:  # extensions that long: number the whole name
        return fitted(name, f" ({number})")
    return fitted(f"{name[: len(name) - len(bare)]}{stem}", tail)


def place(part: Path, out_dir: Path, name: str, sha256: str) -> tuple[Path, str]:
    """Give the verified file ``part`` its name in ``out_dir``, never replacing a file.

    The first of ``name``, ``numbered(name, 1)``, ``numbered(name, 2)``... that is free
    is taken, unless one of those already holds the very same content: the new copy is
    then dropped, so sending a file twice leaves one copy.

    Args:
        part: The complete, verified file (it is moved or removed).
        out_dir: Where the file goes.
        name: The name it was sent under.
        sha256: Its SHA-256 (hex), to recognize a copy already there.

    Returns:
        The file's path, and ``""`` when it got ``name``, ``renamed`` when it got a
        numbered name, or ``identical`` when an equal file was there already.

    Raises:
        StreamError: If ``name`` and :data:`MAX_NUMBERED` numbered names are all taken.
        OSError: If the directory refuses the file.
    """
    for number in range(MAX_NUMBERED + 1):
        final = out_dir / numbered(name, number)
        if _claim(part, final):
            return final, "renamed" if number else ""
        if _same_content(final, sha256, part.stat().st_size):
            part.unlink()
            return final, "identical"
    raise StreamError(
        f"{name!r}: it and {MAX_NUMBERED} numbered names are all taken in {out_dir}; "
        "make room and send it again."
    )


def _claim(part: Path, final: Path) -> bool:
    """Move ``part`` to ``final`` unless that name exists; True when it moved."""
    try:
        # A hard link fails when the name exists, where os.replace would replace the file.
        os.link(part, final)
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this file system (FAT, some network ones): check, then
        # rename. Another program could take the name in between; nothing portable
        # renames without replacing.
        if os.path.lexists(final):
            return False
        os.replace(part, final)
        return True
    part.unlink()
    return True


def _same_content(path: Path, sha256: str, size: int) -> bool:
    """Whether ``path`` is a regular file of ``size`` bytes with SHA-256 ``sha256``."""
    try:
        if not path.is_file() or path.stat().st_size != size:
            return False
        hasher = hashlib.sha256()
        with path.open("rb") as file:
            while block := file.read(READ_SIZE):
                hasher.update(block)
    except OSError:  # unreadable: not known to be the same, so it is kept apart
        return False
    return hasher.hexdigest() == sha256


def _rehash(file: Any, hasher: Any, upto: int, part: Path) -> None:
    """Hash the first ``upto`` bytes already on disk and cut the file there."""
    remaining = upto
    while remaining:
        block = file.read(min(READ_SIZE, remaining))
        if not block:
            raise StreamError(
                f"{part} holds fewer bytes than were acknowledged ({upto}); delete it and "
                "send the file again."
            )
        hasher.update(block)
        remaining -= len(block)
    file.truncate(upto)
    file.seek(upto)

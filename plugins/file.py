"""``FileStore``: objects as files in a directory shared by processes (or hosts, via NFS).

Each object is one file named by its key (32 hex digits): a 20-byte head (the mark
``FWO1``, expiry time, reads left) followed by the serialized frame.

* **Atomic writes**: written to ``.tmp-<key>`` and renamed into place, so readers never
  see a partial object.
* **Evict = unlink.** **Evict-on-read** renames the file to a unique ``.claim-*`` name
  first: of two concurrent readers only one rename succeeds, so only one gets the object.
* **Counted reads** (``readers=N``) take an exclusive ``flock`` on the file, decrement
  the count in place and, at zero, mark the file consumed before unlinking it, so a
  reader that was waiting on the lock sees "consumed" rather than a stale count.
* **TTL** is an absolute wall-clock expiry (hosts sharing the directory need synced
  clocks); expired files are deleted when next touched, not by a background sweep.
* **Foreign files are refused, never changed or deleted.** Anything at a key's path this
  store cannot have written (not a regular file, e.g. a FIFO, a directory or a symlink;
  shorter than the head, or without its mark) makes ``get`` raise
  :class:`InvalidObjectFileError` for that object and ``exists`` return ``False``; it is
  opened without blocking and left in place.
* **A failed read loses nothing**: an evicting read that fails after it claimed the file
  puts it back; a plain read needs only read access to an uncounted object; the last
  read of a counted object returns it even if the file cannot be unlinked (a read-only
  directory), and a failed write leaves neither its temporary file nor the batch's
  earlier objects behind.
* **A store rebuilt from its config** (by a consumer, from an event read from Redis)
  creates no directory: the one the config names must exist.

POSIX only (``fcntl``). Leftover ``.tmp-*``/``.claim-*`` files after a crash can be
deleted safely. Registered as kind ``file`` through the ``framework.stores`` entry point.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import re
import stat
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from framework.buffers import BytesLike, Segments
from framework.exceptions import StoreError
from framework.store._options import construct
from framework.store.base import KEEP_UNREADABLE, BaseStore
from framework.store.config import StoreConfig

__all__ = ["FileStore", "InvalidObjectFileError"]

logger = logging.getLogger(__name__)

# The mark of a file this store wrote, the expiry as Unix time (0 = never) and reads left
# (0 = unlimited, -1 = consumed).
_HEAD = struct.Struct(">4sdq")
_MARK = b"FWO1"
_CONSUMED = -1
_KEY = re.compile(r"^[0-9a-f]{32}$")


class InvalidObjectFileError(StoreError):
    """The file at a key's path is not an object file this store wrote.

    It is not a regular file (a FIFO, a directory, a symbolic link, a socket or a
    device), or its head is truncated or invalid. The store writes objects atomically,
    so such a file was planted or damaged by something else: the store neither reads
    nor deletes it, not with ``evict=True`` and not with ``evict(key)`` either.

    Args:
        key: The key that was read.
        store: Name of the store.
        path: The file at the key's path.
        reason: What is wrong with the file, e.g. ``"a FIFO, not a regular file"``.

    Attributes:
        key: The key that was read.
        store: Name of the store.
        path: The file at the key's path.
        reason: What is wrong with the file.
    """

    def __init__(self, key: str, store: str, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(
            f"Object {key!r} of file store {store!r} is not a valid object file: {path} "
            f"is {reason}. The store did not write it and left it in place."
        )
        self.key = key
        self.store = store
        self.path = os.fspath(path)
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (e.g. from a worker process) by its fields, not by the message.
        return type(self), (self.key, self.store, self.path, self.reason)


class _InvalidFile(Exception):
    """Internal: the file is not an object file; ``reason`` says why (key-less)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FileStore(BaseStore):
    """Store objects as files in ``directory``.

    Args:
        name: Name of the store.
        directory: Directory holding the objects (created if missing). Use a path all
            processes see the same way; the config records it as an absolute path.
        serializer: Name of a registered serializer (see ``BaseStore``).
        secret: Shared HMAC key: objects are signed and verified.
        ttl: Default lifetime of objects in seconds; ``None`` = no expiry.
        create: Create the directory if it is missing (``from_config`` does not).

    Raises:
        StoreError: If the directory cannot be created, or is missing and ``create`` is
            False.
    """

    kind = "file"

    def __init__(
        self,
        name: str = "file",
        *,
        directory: str | os.PathLike[str],
        serializer: str = "auto",
        secret: bytes | None = None,
        ttl: float | None = None,
        create: bool = True,
    ) -> None:
        super().__init__(name, serializer=serializer, secret=secret, ttl=ttl)
        self.directory = Path(directory).absolute()
        if not create:
            if not self.directory.is_dir():
                raise StoreError(
                    f"The directory {self.directory} of file store {name!r} does not exist "
                    "here; a store rebuilt from its config creates none: mount or create it."
                )
            return
        with _os_errors(f"create the directory of file store {name!r}"):
            self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(cls, config: StoreConfig) -> FileStore:
        """Build the store a config describes, without creating its directory.

        A consumer rebuilds a store from the config in an event it read from Redis:
        whoever can write there must not make it create directories anywhere.

        Raises:
            StoreError: If the directory does not exist.
            ConfigurationError: If the config does not fit this class.
        """
        return construct(cls, config, create=False)

    def _options(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        head = _HEAD.pack(_MARK, 0.0 if ttl is None else time.time() + ttl, readers or 0)
        keys: list[str] = []
        for frame in frames:
            key = uuid.uuid4().hex
            temp = self.directory / f".tmp-{key}"
            try:
                with _os_errors(f"write object {key!r} to file store {self.name!r}"):
                    with temp.open("wb") as file:
                        file.write(head)
                        for part in frame.parts:
                            file.write(part)
                    os.replace(temp, self.directory / key)
            except StoreError:
                # All or nothing: the caller gets no key, so nothing of the batch may stay.
                for leftover in [temp, *(self.directory / k for k in keys)]:
                    with contextlib.suppress(OSError):
                        leftover.unlink(missing_ok=True)
                raise
            keys.append(key)
        return keys

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[BytesLike | StoreError | None]:
        # An invalid file fails its own object only: with ``evict`` the others of the
        # call are deleted already.
        return [self._read_one(key, evict) for key in keys]

    def _read_one(self, key: str, evict: bool) -> bytes | InvalidObjectFileError | None:
        """Read (and with ``evict`` delete) the object of ``key``; ``None`` if absent.

        Returns:
            The object file's frame; ``None`` if absent; an :class:`InvalidObjectFileError`
            if the file at the key's path is not an object file (it is left in place,
            also with ``evict``).

        Raises:
            StoreError: If the file cannot be read, claimed or deleted.
        """
        path = self._path(key)
        if path is None:
            return None
        try:
            with _os_errors(f"read object {key!r} from file store {self.name!r}"):
                if not evict:
                    return self._open_and_read(path, claim=False)
                claimed = self.directory / f".claim-{uuid.uuid4().hex}"
                try:
                    os.rename(path, claimed)
                except FileNotFoundError:
                    return None  # absent, or another reader claimed it first
                done = False
                try:
                    value = self._open_and_read(claimed, claim=True)
                    done = True
                    return value
                finally:
                    if done:
                        claimed.unlink(missing_ok=True)
                    else:
                        # Not an object, or it could not be read: put it back rather than
                        # lose it (keys are never reused, so the name is free).
                        os.rename(claimed, path)
        except _InvalidFile as exc:
            return InvalidObjectFileError(key, self.name, path, exc.reason)

    def _open_and_read(self, path: Path, *, claim: bool) -> bytes | None:
        """Read the object file at ``path``, counting and consuming it as its head says.

        Raises:
            _InvalidFile: If ``path`` is not a regular file or its head is invalid; the
                file is then neither changed nor deleted.
            OSError: If the file cannot be read.
        """
        writable = True
        try:
            fd = _open_regular(path, os.O_RDWR)
        except PermissionError:
            if claim:
                raise
            # A plain read of an uncounted object needs no write access (a shared or
            # read-only directory); a counted one does, checked below.
            fd, writable = _open_regular(path, os.O_RDONLY), False
        if fd is None:
            return None
        with open(fd, "r+b" if writable else "rb", buffering=0) as file:  # re-reads see the disk
            expires, left = _read_head(file)
            if left != 0 or claim:
                # Counted or claimed: re-read the head under the lock that writers of it hold.
                fcntl.flock(file, fcntl.LOCK_EX if writable else fcntl.LOCK_SH)
                expires, left = _read_head(file)
            if left == _CONSUMED:
                return None
            if expires and time.time() >= expires:
                _unlink_if_possible(path)  # expired, so absent, whether deleted or not
                return None
            if left > 0 and not writable:
                raise PermissionError(f"a counted object needs write access to {path}")
            value = file.read()
            if left == 1 or (claim and left > 0):
                _write_head(file, expires, _CONSUMED)
                _unlink_if_possible(path)  # consumed: the read stands, deleted or not
            elif left > 1:
                _write_head(file, expires, left - 1)
            return value

    def _put_back(self, taken: list[tuple[str, BytesLike]]) -> None:
        for key, value in taken:
            self._put_back_one(key, value)

    def _put_back_one(self, key: str, value: BytesLike) -> None:
        path = self._path(key)
        if path is None:
            return
        temp = self.directory / f".tmp-{uuid.uuid4().hex}"
        head = _HEAD.pack(_MARK, time.time() + KEEP_UNREADABLE, 0)
        try:
            with temp.open("wb") as file:
                file.write(head)
                file.write(value)
            os.link(temp, path)  # unlike a rename, never replaces what is there now
        except OSError:  # the read itself succeeded: its other objects must not be lost
            logger.warning("Could not write back unreadable object %s.", key, exc_info=True)
        finally:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    def _exists(self, key: str) -> bool:
        path = self._path(key)
        if path is None:
            return False
        with _os_errors(f"check object {key!r} in file store {self.name!r}"):
            try:
                head = _head_of(path)
            except _InvalidFile:
                return False  # not an object (get() refuses it), so none is stored here
        if head is None:
            return False
        expires, left = head
        return left != _CONSUMED and not (expires and time.time() >= expires)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if path is None:
            return
        with _os_errors(f"evict object {key!r} from file store {self.name!r}"):
            try:
                head = _head_of(path)
            except _InvalidFile as exc:
                # Not an object this store wrote (exists() says False): someone else's
                # file, which evicting a key must not destroy.
                logger.warning("Not evicting %s of file store %r: %s.", path, self.name, exc)
                return
            if head is not None:
                path.unlink(missing_ok=True)

    def _path(self, key: str) -> Path | None:
        """The file of ``key``; ``None`` for anything but a key this store makes."""
        # The pattern also rules out path traversal by keys read from untrusted events.
        return self.directory / key if isinstance(key, str) and _KEY.fullmatch(key) else None


def _head_of(path: Path) -> tuple[float, int] | None:
    """The head (expiry, reads left) of the object file at ``path``; None if absent.

    Raises:
        _InvalidFile: If ``path`` is not an object file (nothing is changed).
        OSError: If it cannot be read.
    """
    fd = _open_regular(path, os.O_RDONLY)
    if fd is None:
        return None
    with open(fd, "rb", buffering=0) as file:
        return _read_head(file)


def _open_regular(path: Path, flags: int) -> int | None:
    """Open ``path`` with ``flags`` if it is a regular file, without ever blocking.

    Args:
        path: The file to open.
        flags: ``os.O_RDONLY`` or ``os.O_RDWR``.

    Returns:
        A blocking file descriptor the caller must close, or ``None`` if ``path`` is absent.

    Raises:
        _InvalidFile: If ``path`` is not a regular file (nothing is read from it).
        OSError: If a regular file cannot be opened.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer forever.
        # O_NOFOLLOW: the store makes no symlinks, and one could point at any file, which a
        # counted read would rewrite.
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError:
        # A symlink (ELOOP), a socket (ENXIO) or a directory opened for writing (EISDIR)
        # fails to open: tell those from a regular file this process may not open.
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return None  # gone meanwhile: claimed or consumed by another reader
        if not stat.S_ISREG(mode):
            raise _InvalidFile(_not_regular(mode)) from None
        raise
    try:
        mode = os.fstat(fd).st_mode  # of what was opened, so nothing can swap it in between
        if not stat.S_ISREG(mode):
            raise _InvalidFile(_not_regular(mode))
        os.set_blocking(fd, True)  # O_NONBLOCK was for the open only
    except BaseException:
        os.close(fd)
        raise
    return fd


def _not_regular(mode: int) -> str:
    """Describe a file that is not a regular file, by its ``st_mode``."""
    kinds = [
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ]
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def _read_head(file: IO[bytes]) -> tuple[float, int]:
    """Read and check the head at the start of ``file``.

    Returns:
        The expiry (Unix time, 0 = never) and the reads left (0 = unlimited, -1 = consumed).

    Raises:
        _InvalidFile: If the file is shorter than the head or the head is out of range.
    """
    file.seek(0)
    data = file.read(_HEAD.size)
    if len(data) < _HEAD.size:
        raise _InvalidFile(f"{len(data)} bytes long, shorter than the {_HEAD.size}-byte head")
    mark, expires, left = _HEAD.unpack(data)
    if mark != _MARK:
        raise _InvalidFile(f"a file without this store's mark {_MARK!r} (not written by it)")
    # _write never stores these: a NaN expiry would never expire, a count below
    # "consumed" would be read forever.
    if not math.isfinite(expires) or expires < 0 or left < _CONSUMED:
        raise _InvalidFile(f"a file with an invalid head (expiry {expires!r}, reads left {left})")
    return float(expires), int(left)


def _write_head(file: IO[bytes], expires: float, left: int) -> None:
    file.seek(0)
    file.write(_HEAD.pack(_MARK, expires, left))
    file.flush()


def _unlink_if_possible(path: Path) -> None:
    """Delete a file whose head already says it is gone (consumed or expired)."""
    with contextlib.suppress(OSError):  # e.g. a read-only directory: its head tells
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """Turn ``OSError`` into ``StoreError`` with a sentence naming the operation."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"Could not {what}: {exc}.") from exc

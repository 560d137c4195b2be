"""``FileStore``: objects as files in a directory shared by processes (or hosts, via NFS).

Each object is one file named by its key (32 hex digits): a 16-byte head (expiry time,
reads left) followed by the serialized frame.

* **Atomic writes**: written to ``.tmp-<key>`` and renamed into place, so readers never
  see a partial object.
* **Evict = unlink.** **Evict-on-read** renames the file to a unique ``.claim-*`` name
  first: of two concurrent readers only one rename succeeds, so only one gets the object.
* **Counted reads** (``readers=N``) take an exclusive ``flock`` on the file, decrement
  the count in place and, at zero, mark the file consumed before unlinking it, so a
  reader that was waiting on the lock sees "consumed" rather than a stale count.
* **TTL** is an absolute wall-clock expiry (hosts sharing the directory need synced
  clocks); expired files are deleted when next touched, not by a background sweep.

POSIX only (``fcntl``). Leftover ``.tmp-*``/``.claim-*`` files after a crash can be
deleted safely. Registered as kind ``file`` through the ``framework.stores`` entry point.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from framework.buffers import BytesLike, Segments
from framework.exceptions import StoreError
from framework.store.base import BaseStore

__all__ = ["FileStore"]

# Expiry as Unix time (0 = never) and reads left (0 = unlimited, -1 = consumed).
_HEAD = struct.Struct(">dq")
_CONSUMED = -1
_KEY = re.compile(r"^[0-9a-f]{32}$")


class FileStore(BaseStore):
    """Store objects as files in ``directory``.

    Args:
        name: Name of the store.
        directory: Directory holding the objects (created if missing). Use a path all
            processes see the same way; the config records it as an absolute path.
        serializer: Name of a registered serializer (see ``BaseStore``).
        secret: Shared HMAC key: objects are signed and verified.
        ttl: Default lifetime of objects in seconds; ``None`` = no expiry.

    Raises:
        StoreError: If the directory cannot be created.
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
    ) -> None:
        super().__init__(name, serializer=serializer, secret=secret, ttl=ttl)
        self.directory = Path(directory).absolute()
        with _os_errors(f"create the directory of file store {name!r}"):
            self.directory.mkdir(parents=True, exist_ok=True)

    def _options(self) -> dict[str, Any]:
        return {"directory": str(self.directory)}

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        head = _HEAD.pack(0.0 if ttl is None else time.time() + ttl, readers or 0)
        keys = []
        for frame in frames:
            key = uuid.uuid4().hex
            temp = self.directory / f".tmp-{key}"
            with _os_errors(f"write object {key!r} to file store {self.name!r}"):
                with temp.open("wb") as file:
                    file.write(head)
                    for part in frame.parts:
                        file.write(part)
                os.replace(temp, self.directory / key)
            keys.append(key)
        return keys

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[BytesLike | None]:
        return [self._read_one(key, evict) for key in keys]

    def _read_one(self, key: str, evict: bool) -> bytes | None:
        path = self._path(key)
        if path is None:
            return None
        with _os_errors(f"read object {key!r} from file store {self.name!r}"):
            if evict:
                claimed = self.directory / f".claim-{uuid.uuid4().hex}"
                try:
                    os.rename(path, claimed)
                except FileNotFoundError:
                    return None  # absent, or another reader claimed it first
                try:
                    return self._open_and_read(claimed, claim=True)
                finally:
                    claimed.unlink(missing_ok=True)
            return self._open_and_read(path, claim=False)

    def _open_and_read(self, path: Path, *, claim: bool) -> bytes | None:
        try:
            file = path.open("r+b", buffering=0)  # unbuffered: re-reads see the disk
        except FileNotFoundError:
            return None
        with file:
            expires, left = _HEAD.unpack(file.read(_HEAD.size))
            if left != 0 or claim:
                # Counted or claimed: re-read the head under the lock that writers of it hold.
                fcntl.flock(file, fcntl.LOCK_EX)
                expires, left = _read_head(file)
            if left == _CONSUMED:
                return None
            if expires and time.time() >= expires:
                path.unlink(missing_ok=True)
                return None
            value = file.read()
            if left == 1 or (claim and left > 0):
                _write_head(file, expires, _CONSUMED)
                path.unlink(missing_ok=True)
            elif left > 1:
                _write_head(file, expires, left - 1)
            return value

    def _exists(self, key: str) -> bool:
        path = self._path(key)
        if path is None:
            return False
        try:
            with path.open("rb") as file:
                expires, left = _HEAD.unpack(file.read(_HEAD.size))
        except (FileNotFoundError, struct.error):
            return False
        return left != _CONSUMED and not (expires and time.time() >= expires)

    def _delete(self, key: str) -> None:
        path = self._path(key)
        if path is not None:
            with _os_errors(f"evict object {key!r} from file store {self.name!r}"):
                path.unlink(missing_ok=True)

    def _path(self, key: str) -> Path | None:
        """The file of ``key``; ``None`` for anything but a key this store makes."""
        # The pattern also rules out path traversal by keys read from untrusted events.
        return self.directory / key if isinstance(key, str) and _KEY.fullmatch(key) else None


def _read_head(file: IO[bytes]) -> tuple[float, int]:
    file.seek(0)
    expires, left = _HEAD.unpack(file.read(_HEAD.size))
    return float(expires), int(left)


def _write_head(file: IO[bytes], expires: float, left: int) -> None:
    file.seek(0)
    file.write(_HEAD.pack(expires, left))
    file.flush()


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """Turn ``OSError`` into ``StoreError`` with a sentence naming the operation."""
    try:
        yield
    except OSError as exc:
        raise StoreError(f"Could not {what}: {exc}.") from exc

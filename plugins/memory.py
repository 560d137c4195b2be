"""``MemoryStore``: a thread-safe store in this process's memory (tests, demos, one process).

Objects are kept serialized (so a later change to the original does not leak into the
store, and unserialisable objects fail at ``put`` as with any other store). Stores built
from the same config in one process share a *segment* of memory while one of them is
alive, so proxies pickled and unpickled within the process resolve. Another process
sees an empty segment: use the file or Redis store across processes.

Registered as kind ``memory`` through the ``framework.stores`` entry point.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from framework.buffers import BytesLike, Segments
from framework.store.base import KEEP_UNREADABLE, BaseStore

__all__ = ["MemoryStore"]


@dataclass
class _Entry:
    value: bytes
    deadline: float | None  # time.monotonic() after which the entry is gone
    remaining: int | None  # reads left before deletion, None = unlimited


@dataclass(eq=False)
class _Segment:
    lock: threading.Lock = field(default_factory=threading.Lock)
    entries: dict[str, _Entry] = field(default_factory=dict)


_segments: weakref.WeakValueDictionary[str, _Segment] = weakref.WeakValueDictionary()
_segments_lock = threading.Lock()


def _attach(segment: str | None) -> tuple[str, _Segment]:
    """Return the named segment (created if gone) or a new one."""
    with _segments_lock:
        # The creating process's id first: a store rebuilt elsewhere can tell it holds none
        # of the objects (see MemoryStore._missing_hint).
        name = segment or f"{os.getpid()}-{uuid.uuid4().hex}"
        memory = _segments.get(name)
        if memory is None:
            memory = _segments[name] = _Segment()
        return name, memory


class MemoryStore(BaseStore):
    """Store objects in this process's memory; thread-safe.

    Args:
        name: Name of the store.
        segment: Memory segment to attach to; ``None`` creates a new one. Stores with
            the same segment share their objects (``from_config`` uses this).
        serializer: Name of a registered serializer (see ``BaseStore``).
        secret: Shared HMAC key: objects are signed and verified.
        ttl: Default lifetime of objects in seconds; ``None`` = no expiry.
    """

    kind = "memory"

    def __init__(
        self,
        name: str = "memory",
        *,
        segment: str | None = None,
        serializer: str = "auto",
        secret: bytes | None = None,
        ttl: float | None = None,
    ) -> None:
        super().__init__(name, serializer=serializer, secret=secret, ttl=ttl)
        self.segment, self._memory = _attach(segment)

    def _options(self) -> dict[str, Any]:
        return {"segment": self.segment}

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        deadline = None if ttl is None else time.monotonic() + ttl
        entries = {uuid.uuid4().hex: _Entry(f.join(), deadline, readers) for f in frames}
        with self._memory.lock:
            self._memory.entries.update(entries)
        return list(entries)

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[BytesLike | None]:
        with self._memory.lock:
            return [self._take(key, evict) for key in keys]

    def _take(self, key: str, evict: bool) -> bytes | None:
        """Read one entry, counting the read; the caller holds the lock."""
        entry = self._live(key)
        if entry is None:
            return None
        if entry.remaining is not None:
            entry.remaining -= 1
        if evict or entry.remaining == 0:
            del self._memory.entries[key]
        return entry.value

    def _live(self, key: str) -> _Entry | None:
        """The entry under ``key`` unless expired (expired ones are dropped); lock held."""
        entry = self._memory.entries.get(key)
        if entry is not None and entry.deadline is not None and time.monotonic() >= entry.deadline:
            del self._memory.entries[key]
            return None
        return entry

    def _put_back(self, taken: list[tuple[str, BytesLike]]) -> None:
        deadline = time.monotonic() + KEEP_UNREADABLE
        with self._memory.lock:
            for key, value in taken:
                self._memory.entries.setdefault(key, _Entry(bytes(value), deadline, None))

    def _missing_hint(self) -> str:
        creator = self.segment.split("-", 1)[0]
        if creator == str(os.getpid()):
            return ""
        return (
            f"Memory store {self.name!r} keeps its objects in the memory of the process that "
            f"made it (process {creator}); this is process {os.getpid()}, which cannot read "
            "them: use a store other processes reach (RedisStore, FileStore)."
        )

    def _exists(self, key: str) -> bool:
        with self._memory.lock:
            return self._live(key) is not None

    def _delete(self, key: str) -> None:
        with self._memory.lock:
            self._memory.entries.pop(key, None)

    def _close(self) -> None:
        # Other stores may share the segment; it is freed when the last one is collected.
        self._memory = _Segment()

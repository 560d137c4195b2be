"""Back-pressure: bound what a producer leaves unconsumed in its stores, per topic.

A producer remembers each object it stored for a consumer to evict (key and size).
Before it publishes more to a topic whose backlog is at its bound, it asks the
store which of the oldest objects are gone (consumed) and forgets those; while the
bound is still reached it waits, up to a timeout, and then raises
:class:`~framework.exceptions.BacklogFullError`. Consumption is mostly in order,
so one ``exists`` per consumed object suffices. An empty backlog always admits a
batch, so one object larger than the bound still goes through.

Only evicted objects count: objects sent with ``evict=False`` are read by many
consumers and expire by their TTL; inline events are small (see ``inline_limit``).

The byte bound is meant as a bound on the Redis memory a topic's backlog takes, so
it also reserves room for two copies of the largest object: the one a producer is
writing (Redis's request buffer) and the one a consumer is reading (its reply
buffer). Bytes are counted at their worst-case Redis footprint: payload plus 25%,
the allocator's rounding of sizes at a power of two (REDIS_FACTS §2). With objects
much smaller than the bound the reserve is negligible; with large objects they go
one at a time.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from framework.exceptions import BacklogFullError, ConfigurationError
from framework.store import Store

__all__ = ["DEFAULT_BACKLOG_BYTES", "DEFAULT_BACKLOG_OBJECTS", "Backlog", "BacklogBound"]

#: Default bound of a durable topic's unconsumed stored bytes (per producer and topic).
DEFAULT_BACKLOG_BYTES: Final = 256 * 1024 * 1024
#: Default bound of a durable topic's unconsumed stored objects (per producer and topic).
DEFAULT_BACKLOG_OBJECTS: Final = 10_000
#: Worst-case Redis memory per payload byte (jemalloc rounds 2**n-byte values up 25%).
FOOTPRINT: Final = 1.25
#: Longest pause (s) between two checks of a full backlog.
MAX_PAUSE: Final = 0.05


@dataclass(frozen=True)
class BacklogBound:
    """The limits of one topic's backlog; ``None`` means no limit of that kind.

    Attributes:
        objects: Most unconsumed objects.
        nbytes: Most unconsumed bytes.
        timeout: Longest wait (s) for room before ``BacklogFullError``.
    """

    objects: int | None = None
    nbytes: int | None = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("objects", "nbytes"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"backlog {name} must be a positive int or None.")
        if not self.timeout >= 0:
            raise ConfigurationError(f"backlog timeout must be >= 0 s, got {self.timeout!r}.")

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self.objects is not None or self.nbytes is not None


@dataclass
class Backlog:
    """The unconsumed stored objects of one topic, oldest first."""

    items: deque[tuple[Store, str, int]] = field(default_factory=deque)
    nbytes: int = 0
    largest: int = 0  # largest object seen: the in-flight reserve is two of these

    def add(self, stored: Iterable[tuple[Store, str, int]]) -> None:
        """Remember newly stored objects."""
        for item in stored:
            self.items.append(item)
            self.nbytes += item[2]
            self.largest = max(self.largest, item[2])

    def wait_for_room(self, topic: str, bound: BacklogBound, objects: int, nbytes: int) -> None:
        """Return once ``objects`` more objects (``nbytes``) fit under ``bound``.

        An empty backlog always has room.

        Raises:
            BacklogFullError: If consumers made no room within ``bound.timeout``.
            BackendError: If asking the store failed.
        """
        deadline = time.monotonic() + bound.timeout
        pause = 0.001
        while self._full(bound, objects, nbytes):
            self._forget_consumed()
            if not self._full(bound, objects, nbytes):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise BacklogFullError(
                    f"Topic {topic!r} has {len(self.items)} unconsumed object(s), "
                    f"{self.nbytes} bytes, at its bound ({bound.objects} objects, "
                    f"{bound.nbytes} bytes) for {bound.timeout} s: its consumers are "
                    "too slow or gone.",
                    topic=topic,
                    objects=len(self.items),
                    nbytes=self.nbytes,
                )
            time.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE)

    def _full(self, bound: BacklogBound, objects: int, nbytes: int) -> bool:
        if not self.items:
            return False
        over_objects = bound.objects is not None and len(self.items) + objects > bound.objects
        reserve = 2 * max(self.largest, nbytes // max(objects, 1))
        need = (self.nbytes + nbytes + reserve) * FOOTPRINT
        over_bytes = bound.nbytes is not None and need > bound.nbytes
        return over_objects or over_bytes

    def _forget_consumed(self) -> None:
        """Drop the oldest objects that consumers have evicted, up to the first one left."""
        while self.items:
            store, key, size = self.items[0]
            if store.exists(key):
                return
            self.items.popleft()
            self.nbytes -= size

"""The records of a producer's batches: buffered items, built batches, topic state (no Redis code).

:class:`~framework.stream.StreamProducer` buffers :class:`Item` objects per topic in a
:class:`TopicState`; :mod:`framework.stream._building` turns them into
:class:`Outgoing` batches for the publisher, and a batch the aggregator failed on is
kept as a :class:`FailedBatch` until a caller hears of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from framework.buffers import Segments
from framework.store import Encoded, StagedBatch, Store
from framework.stream._backlog import Backlog
from framework.stream.events import EventBatch

__all__ = ["FailedBatch", "Fuse", "Item", "Outgoing", "TopicState", "aggregate"]


@dataclass
class Item:
    """One buffered object: the object, its evict flag and its metadata.

    ``frame`` (an inline object) or ``value`` (an object for a store, spilled ones
    included) is set by :meth:`~framework.stream._building.BatchBuilder.encode`, when
    the object is sent.
    """

    obj: Any
    evict: bool
    metadata: dict[str, Any]
    frame: Segments | None = None
    value: Encoded | None = None


def aggregate(aggregator: Callable[[list[Any]], Any] | None, items: list[Item]) -> list[Item]:
    """``items`` as one aggregated item (metadata merged, later wins), or as they are."""
    if aggregator is None or not items:
        return items
    metadata: dict[str, Any] = {}
    for item in items:
        metadata.update(item.metadata)
    obj = aggregator([item.obj for item in items])
    return [Item(obj, any(item.evict for item in items), metadata)]


_EMPTY = Segments(())


#: Stages a batch's store writes (encoded objects, ttl) for the publisher; ``None`` when
#: it cannot.
Fuse = Callable[[Store, Sequence[Encoded], Optional[float]], Optional[StagedBatch]]


@dataclass(frozen=True)
class Outgoing:
    """A built batch, ready to publish (and to publish again after a failure).

    Attributes:
        next_seq: Sequence number that follows the batch.
        final: Whether the batch ends its topic.
        message: The encoded message (empty for event-level publishers).
        batch: The batch as events (event-level publishers only).
        commands: Store writes to run before the message (idempotent, so resent with it).
        stored: ``(store, key, nbytes)`` of each object that waits in a store for a
            consumer to evict it (the backlog that back-pressure bounds).
        retry: An earlier attempt failed; it may have reached Redis all the same.
    """

    next_seq: int
    final: bool
    message: Segments = _EMPTY
    batch: EventBatch | None = None
    commands: Sequence[tuple[Any, ...]] = ()
    stored: Sequence[tuple[Store, str, int]] = ()
    retry: bool = False


@dataclass(frozen=True)
class FailedBatch:
    """A batch the aggregator failed on: taken out of the buffer, to report to a caller."""

    items: list[Item]
    cause: Exception


@dataclass
class TopicState:
    """A producer's state of one topic."""

    items: list[Item] = field(default_factory=list)
    since: float | None = None  # monotonic time of the oldest buffered item (linger)
    closed: bool = False  # close_topics() was called
    failed: list[FailedBatch] = field(default_factory=list)  # not reported to a caller yet
    ended: bool = False  # the end-of-stream event is built (pending or published)
    pending: list[Outgoing] = field(default_factory=list)
    next_seq: int = 0
    backlog: Backlog = field(default_factory=Backlog)

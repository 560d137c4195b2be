"""What a closing consumer gives back: the events it took but did not hand over (no Redis code).

Competing consumers (a list topic's) each take whole messages from a shared list. A
consumer that closes in the middle of a message, or before it handed over a message it
took, would lose those events for every consumer: no other one can read them again.
:func:`unhanded_messages` rebuilds, from a consumer's queue, one message per batch
still in it: the batch's events from the first one not handed over to its end (its
end-of-stream included), signed like the original, so the subscriber can put them back
at the head of the topic's list for the other consumers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from framework.stream._reading import Entry
from framework.stream.events import EventBatch, NewObjectEvent, NewObjectKeyEvent, encode_message

__all__ = ["unhanded_messages"]


def unhanded_messages(queue: Iterable[Any], secret: bytes | None) -> list[tuple[bytes, list[str]]]:
    """The messages that give back the events of ``queue``'s entries, in order.

    Args:
        queue: A consumer's queue: entries not handed over yet (reports are skipped).
        secret: The key the consumer verifies messages with; the rebuilt ones are
            signed with it, as the producer signed the originals.

    Returns:
        For each batch with entries in ``queue``, the rebuilt message and the keys of
        the stored objects it names (the consumer must not evict them).
    """
    out: list[tuple[bytes, list[str]]] = []
    last: EventBatch | None = None
    for item in queue:
        if not isinstance(item, Entry) or item.batch is last:
            continue  # later entries of a batch are in its rest already
        last = item.batch
        rest = _rest_of(item.batch, item.event)
        keys = [event.key for event in rest.events if isinstance(event, NewObjectKeyEvent)]
        out.append((_encoded(rest, item.parts, secret), keys))
    return out


def _rest_of(batch: EventBatch, first: Any) -> EventBatch:
    """``batch`` from the event ``first`` on (numbered as in ``batch``)."""
    index = next(i for i, event in enumerate(batch.events) if event is first)
    return batch.model_copy(update={"seq": batch.seq + index, "events": batch.events[index:]})


def _encoded(batch: EventBatch, parts: list[memoryview], secret: bytes | None) -> bytes:
    """The message of ``batch``, its inline objects' parts renumbered from 0."""
    kept: list[memoryview] = []
    events: list[Any] = []
    for event in batch.events:
        if isinstance(event, NewObjectEvent) and event.part >= 0:
            events.append(event.model_copy(update={"part": len(kept)}))
            kept.append(parts[event.part])
        else:
            events.append(event)
    return encode_message(batch.model_copy(update={"events": events}), kept, secret=secret).join()

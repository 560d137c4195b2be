"""Turn a flushed batch of objects into an event batch and its message (no Redis code).

Used by :class:`~framework.stream.StreamProducer`; kept apart so that the batch
and message layout is tested on its own. The records it reads and returns (items,
outgoing and failed batches, topic state) are in :mod:`framework.stream._batches`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from framework.buffers import Segments
from framework.exceptions import SerializationError
from framework.serialize import Serializer, dumps
from framework.store import Encoded, StagedBatch, Store
from framework.stream._batches import FailedBatch, Fuse, Item, Outgoing
from framework.stream.events import (
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    encode_envelope,
    new_epoch,
)

__all__ = ["MESSAGE_BYTES", "BatchBuilder", "FailedBatch", "Fuse", "Outgoing"]

#: Largest message a batch is published as (about; an object bigger than this goes alone).
#: A bigger batch is published as several messages with consecutive sequence numbers:
#: Redis disconnects a pub/sub subscriber as soon as one message takes its output
#: buffer past the hard limit (32 MB by default), and that loss could go unreported
#: when the message was the producer's first.
MESSAGE_BYTES = 1 << 20
#: Bytes an event's JSON takes in its message, not counting its metadata (an estimate).
_EVENT_BYTES = 96


class BatchBuilder:
    """Builds numbered event batches and their messages for one producer.

    Messages are encoded straight from plain dicts of the
    :class:`~framework.stream.events.EventBatch` wire form (the consumer validates
    them with the models); event-level publishers get the models themselves.

    Args:
        producer: The producer's unique id.
        inline_limit: Largest serialized inline object; bigger ones are spilled.
        spill_store: Store for oversized inline objects; ``None`` never spills.
        serializer: Serializer of inline objects.
        secret: Shared HMAC key that signs every message.
        inline_objects: Keep inline objects as Python objects in the events (for
            event-level publishers, which serialize themselves); no message is built.
        fuse: Stages store writes that the publisher sends with the message.
        ttl: Lifetime (s) of objects put in a store that has no default lifetime.
        beat: The producer's heartbeat interval (s), announced in every message; None
            when it sends no heartbeats.
    """

    def __init__(
        self,
        producer: str,
        *,
        inline_limit: int,
        spill_store: Store | None,
        serializer: Serializer | None,
        secret: bytes | None,
        inline_objects: bool,
        fuse: Fuse | None = None,
        ttl: float | None = None,
        beat: float | None = None,
    ) -> None:
        self.producer = producer
        self.beat = beat
        self.epoch = new_epoch()  # this run's id (see EventBatch.epoch)
        self.inline_limit = inline_limit
        self.spill_store = spill_store
        self._serializer = serializer
        self._secret = secret
        self._inline_objects = inline_objects
        self._configs: dict[int, tuple[Store, dict[str, Any]]] = {}
        self._fuse = fuse
        self._ttl = ttl

    @staticmethod
    def check_metadata(topic: str, metadata: dict[str, Any]) -> None:
        """Fail early (at send time) on metadata that cannot travel as JSON.

        Raises:
            SerializationError: If ``metadata`` is not a JSON-serialisable dict.
        """
        if type(metadata) is not dict:
            raise SerializationError(f"Metadata for topic {topic!r} must be a dict.")
        if not metadata:
            return  # the usual case: an empty dict is JSON
        problem = _json_problem(metadata, "metadata")
        if problem is not None:
            # Converting it (a tuple to a list, 3 to "3", a date to a string) would hand
            # consumers something other than what was sent, without a word.
            raise SerializationError(
                f"Metadata for topic {topic!r} must be JSON data that arrives unchanged "
                f"(dicts with str keys, lists, str, finite numbers, bools, None): {problem}."
            )

    def encode(self, item: Item, store: Store | None) -> None:
        """Serialize ``item`` as :meth:`build` will store or carry it.

        Called when the object is sent, so that an object that cannot be serialized
        fails its own ``send`` and never a flush of the objects sent before it.

        Args:
            item: The object; its ``frame`` or ``value`` is set.
            store: The topic's store; ``None`` carries the object inline.

        Raises:
            SerializationError: If the object cannot be serialized.
            TypeError: If a store's custom serializer function returns no bytes.
        """
        if store is not None:
            item.value = store.encode(item.obj)
        elif not self._inline_objects:  # event-level publishers serialize inline objects
            frame = dumps(item.obj, serializer=self._serializer)
            spill = self.spill_store
            if spill is not None and frame.nbytes > self.inline_limit:
                item.value = spill.encode_serialized(item.obj, frame, self._serializer)
            else:
                item.frame = frame

    def build(
        self, topic: str, items: Sequence[Item], *, store: Store | None, eos: bool, seq: int
    ) -> list[Outgoing]:
        """Store or serialize ``items``; build the numbered batch and its messages.

        A batch is one message, unless it is bigger than :data:`MESSAGE_BYTES`: it is
        then split into several, in order, numbered one after the other. The store
        writes and the backlog ride with the first, the end of the topic with the last.

        Args:
            topic: The batch's topic.
            items: The objects, in order.
            store: The topic's store; ``None`` carries objects inline.
            eos: Append the topic's end-of-stream event.
            seq: Sequence number of the batch's first event.

        Raises:
            SerializationError: If an object not encoded yet (an aggregate) cannot be
                serialized.
            BackendError: If the store failed.
        """
        for item in items:
            if item.frame is None and item.value is None:
                self.encode(item, store)
        if self._inline_objects:
            return [self._build_events(topic, items, store=store, eos=eos, seq=seq)]
        events: list[dict[str, Any]] = []
        parts: list[Segments] = []
        config: dict[str, Any] | None = None
        staged = _NOTHING
        if items and store is not None:
            staged = self._store(store, _values(items))
            config = self._config(store)
            events = [_key_event(key, item) for key, item in zip(staged.keys, items, strict=True)]
            stored = _stored(store, staged.keys, items, [approx_size(i.obj) for i in items])
        elif items:
            events, parts, config, staged, stored = self._inline(items)
        else:
            stored = []
        if eos:
            events.append({"type": "eos"})
        header = self._header(topic, seq)
        header.update(store_config=config, events=events)
        message = encode_envelope(header, parts, secret=self._secret)
        if message.nbytes <= MESSAGE_BYTES or len(events) < 2:
            return [Outgoing(seq + len(events), eos, message, None, staged.commands, stored)]
        outs = []
        for group, group_parts in _split(events, parts):
            header.update(seq=seq, events=group)
            message = encode_envelope(header, group_parts, secret=self._secret)
            seq += len(group)
            outs.append(Outgoing(seq, False, message, None))
        outs[0] = dataclasses.replace(outs[0], commands=staged.commands, stored=stored)
        outs[-1] = dataclasses.replace(outs[-1], final=eos)
        return outs

    def heartbeat(self, topic: str, seq: int, *, closing: bool = False) -> Outgoing:
        """A batch without events: the producer is alive (or, ``closing``, stops beating).

        Args:
            topic: The topic, not ended.
            seq: The topic's next sequence number, so a lost last batch shows as a gap.
            closing: The producer closes without ending the topic: consumers stop
                expecting heartbeats from it (it announces an interval of 0).
        """
        header = self._header(topic, seq)
        if closing:
            header["beat"] = 0
        header["events"] = []
        return Outgoing(seq, False, encode_envelope(header, secret=self._secret))

    def _header(self, topic: str, seq: int) -> dict[str, Any]:
        header = {"topic": topic, "producer": self.producer, "epoch": self.epoch, "seq": seq}
        if self.beat is not None:
            header["beat"] = self.beat
        return header

    def _store(self, store: Store, values: list[Encoded]) -> StagedBatch:
        """Stage the writes of ``values`` for the publisher, or put them in ``store`` now."""
        ttl = None if getattr(store, "default_ttl", None) else self._ttl
        staged = self._fuse(store, values, ttl) if self._fuse is not None else None
        if staged is not None:
            return staged
        return StagedBatch(store.put_encoded(values, ttl=ttl), [], None)

    def _build_events(
        self, topic: str, items: Sequence[Item], *, store: Store | None, eos: bool, seq: int
    ) -> Outgoing:
        """The batch as models, inline objects kept as Python objects (event-level)."""
        events: list[Any] = []
        config = None
        if items and store is not None:
            keys = self._store(store, _values(items)).keys
            config = self._config(store)
            events = [
                NewObjectKeyEvent(key=key, evict=item.evict, metadata=item.metadata)
                for key, item in zip(keys, items, strict=True)
            ]
        else:
            events = [NewObjectEvent(obj=i.obj, metadata=i.metadata) for i in items]
        if eos:
            events.append(EndOfStreamEvent())
        batch = EventBatch(
            topic=topic,
            producer=self.producer,
            epoch=self.epoch,
            seq=seq,
            store_config=config,
            events=events,
        )
        return Outgoing(batch.next_seq, eos, batch=batch)

    def _config(self, store: Store) -> dict[str, Any]:
        """The store's config as JSON data, computed once per store."""
        cached = self._configs.get(id(store))
        if cached is None or cached[0] is not store:
            cached = self._configs[id(store)] = (store, store.config().model_dump(mode="json"))
        return cached[1]

    def _inline(self, items: Sequence[Item]) -> tuple[list[Any], list[Segments], Any, Any, Any]:
        """Inline events (spilling oversized objects), parts, config, staged spill, stored."""
        spill = self.spill_store
        big = [i for i, item in enumerate(items) if item.value is not None]
        staged = _NOTHING
        stored: list[tuple[Store, str, int]] = []
        if spill is not None and big:
            spilled = [items[i] for i in big]
            values = _values(spilled)
            staged = self._store(spill, values)
            stored = _stored(spill, staged.keys, spilled, [v.nbytes for v in values])
        keys = dict(zip(big, staged.keys, strict=True)) if staged.keys else {}
        events: list[dict[str, Any]] = []
        parts: list[Segments] = []
        for index, item in enumerate(items):
            if index in keys:
                events.append({**_key_event(keys[index], item), "spilled": True})
            else:
                events.append({"type": "obj", "metadata": item.metadata, "part": len(parts)})
                assert item.frame is not None  # encode() sets one of frame and value
                parts.append(item.frame)
        config = self._config(spill) if spill is not None and keys else None
        return events, parts, config, staged, stored


_NOTHING = StagedBatch([], [], None)


def _split(
    events: list[dict[str, Any]], parts: list[Segments]
) -> list[tuple[list[dict[str, Any]], list[Segments]]]:
    """``events`` in consecutive groups of about :data:`MESSAGE_BYTES` or less, with their parts.

    An inline event's ``part`` is renumbered to index its group's parts.
    """
    groups: list[tuple[list[dict[str, Any]], list[Segments]]] = []
    group: list[dict[str, Any]] = []
    group_parts: list[Segments] = []
    size = 0
    for event in events:
        part = parts[event["part"]] if "part" in event else None
        grows = _EVENT_BYTES + (part.nbytes if part is not None else len(event.get("key", "")))
        if event.get("metadata"):
            grows += len(json.dumps(event["metadata"]))
        if group and size + grows > MESSAGE_BYTES:
            groups.append((group, group_parts))
            group, group_parts, size = [], [], 0
        if part is not None:
            event = {**event, "part": len(group_parts)}
            group_parts.append(part)
        group.append(event)
        size += grows
    groups.append((group, group_parts))
    return groups


def _stored(
    store: Store, keys: Sequence[str], items: Sequence[Item], sizes: Sequence[int]
) -> list[tuple[Store, str, int]]:
    """The objects consumers evict (evict flag set): the topic's backlog."""
    return [
        (store, key, size) for key, item, size in zip(keys, items, sizes, strict=True) if item.evict
    ]


def approx_size(obj: Any) -> int:
    """Bytes held by ``obj``: its buffer size when it has one, else ``sys.getsizeof``."""
    try:
        return memoryview(obj).nbytes
    except (TypeError, ValueError):  # numpy datetime64 arrays: ValueError
        return sys.getsizeof(obj)


def _values(items: Sequence[Item]) -> list[Encoded]:
    """The encoded values of ``items`` bound for a store (set by :meth:`BatchBuilder.encode`)."""
    # build() encodes every item first, so no value is None here (not checked: hot path).
    return [item.value for item in items]  # type: ignore[misc]


def _key_event(key: str, item: Item) -> dict[str, Any]:
    return {"type": "key", "key": key, "evict": item.evict, "metadata": item.metadata}


def _json_problem(value: Any, path: str) -> str | None:
    """What in ``value`` would not arrive unchanged through JSON, or None."""
    if value is None or type(value) in (str, bool, int):
        return None
    if type(value) is float:
        return None if math.isfinite(value) else f"{path} is {value}"
    if type(value) is list:
        found = (_json_problem(item, f"{path}[{i}]") for i, item in enumerate(value))
        return next((p for p in found if p is not None), None)
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{path} has the key {key!r}, not a str"
            problem = _json_problem(item, f"{path}[{key!r}]")
            if problem is not None:
                return problem
        return None
    return f"{path} is a {type(value).__name__}"

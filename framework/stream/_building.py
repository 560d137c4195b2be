"""Turn a flushed batch of objects into an event batch and its message (no Redis code).

Used by :class:`~framework.stream.StreamProducer`; kept apart so that the batch
and message layout is tested on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pydantic_core

from framework.buffers import Segments
from framework.exceptions import SerializationError
from framework.serialize import Serializer, dumps, encode_frame
from framework.store import StagedBatch, Store
from framework.stream.events import (
    EVENT_VERSION,
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
)

__all__ = ["BatchBuilder", "Fuse", "Outgoing"]

#: (object, evict flag, metadata) of one buffered object.
Item = tuple[Any, bool, dict[str, Any]]

_EMPTY = Segments(())


#: Stages a batch's store writes for a pipelined publish; ``None`` when it cannot.
Fuse = Callable[[Store, Sequence[Any]], Optional[StagedBatch]]


@dataclass(frozen=True)
class Outgoing:
    """A built batch, ready to publish (and to publish again after a failure).

    Attributes:
        next_seq: Sequence number that follows the batch.
        final: Whether the batch ends its topic.
        message: The encoded message (empty for event-level publishers).
        batch: The batch as events (event-level publishers only).
        writes: Store writes to send with the message (idempotent, so resent with it).
        px: Lifetime (ms) of the written values.
    """

    next_seq: int
    final: bool
    message: Segments = _EMPTY
    batch: EventBatch | None = None
    writes: Sequence[tuple[str, Any]] = ()
    px: int | None = None


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
    ) -> None:
        self.producer = producer
        self.inline_limit = inline_limit
        self.spill_store = spill_store
        self._serializer = serializer
        self._secret = secret
        self._inline_objects = inline_objects
        self._configs: dict[int, tuple[Store, dict[str, Any]]] = {}
        self._fuse = fuse

    @staticmethod
    def check_metadata(topic: str, metadata: dict[str, Any]) -> None:
        """Fail early (at send time) on metadata that cannot travel as JSON.

        Raises:
            SerializationError: If ``metadata`` is not a JSON-serialisable dict.
        """
        if type(metadata) is not dict:
            raise SerializationError(f"Metadata for topic {topic!r} must be a dict.")
        try:
            pydantic_core.to_json(metadata)
        except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
            raise SerializationError(f"Metadata for topic {topic!r} is not JSON: {exc}") from exc

    def build(
        self, topic: str, items: Sequence[Item], *, store: Store | None, eos: bool, seq: int
    ) -> Outgoing:
        """Store or serialize ``items``; build the numbered batch and its message.

        Args:
            topic: The batch's topic.
            items: The objects, in order.
            store: The topic's store; ``None`` carries objects inline.
            eos: Append the topic's end-of-stream event.
            seq: Sequence number of the batch's first event.

        Raises:
            SerializationError: If an object cannot be serialized.
            BackendError: If the store failed.
        """
        if self._inline_objects:
            return self._build_events(topic, items, store=store, eos=eos, seq=seq)
        events: list[dict[str, Any]] = []
        parts: list[Segments] = []
        config: dict[str, Any] | None = None
        writes: Sequence[tuple[str, Any]] = ()
        px = None
        if items and store is not None:
            keys, writes, px = self._store(store, [obj for obj, _, _ in items])
            config = self._config(store)
            events = [_key_event(key, item) for key, item in zip(keys, items, strict=True)]
        elif items:
            events, parts, config, writes, px = self._inline(items)
        if eos:
            events.append({"type": "eos"})
        header = {"v": EVENT_VERSION, "topic": topic, "producer": self.producer, "seq": seq}
        header.update(store_config=config, events=events)
        message = encode_frame(header, parts, secret=self._secret)
        return Outgoing(seq + len(events), eos, message, None, writes, px)

    def _store(self, store: Store, objs: list[Any]) -> StagedBatch:
        """Stage the writes of ``objs`` for the publisher, or put them in ``store`` right away."""
        staged = self._fuse(store, objs) if self._fuse is not None else None
        return staged if staged is not None else StagedBatch(store.put_batch(objs), [], None)

    def _build_events(
        self, topic: str, items: Sequence[Item], *, store: Store | None, eos: bool, seq: int
    ) -> Outgoing:
        """The batch as models, inline objects kept as Python objects (event-level)."""
        events: list[Any] = []
        config = None
        if items and store is not None:
            keys = store.put_batch([obj for obj, _, _ in items])
            config = self._config(store)
            events = [
                NewObjectKeyEvent(key=key, evict=evict, metadata=metadata)
                for key, (_, evict, metadata) in zip(keys, items, strict=True)
            ]
        else:
            events = [NewObjectEvent(obj=obj, metadata=meta) for obj, _, meta in items]
        if eos:
            events.append(EndOfStreamEvent())
        batch = EventBatch(
            topic=topic, producer=self.producer, seq=seq, store_config=config, events=events
        )
        return Outgoing(batch.next_seq, eos, batch=batch)

    def _config(self, store: Store) -> dict[str, Any]:
        """The store's config as JSON data, computed once per store."""
        cached = self._configs.get(id(store))
        if cached is None or cached[0] is not store:
            cached = self._configs[id(store)] = (store, store.config().model_dump(mode="json"))
        return cached[1]

    def _inline(self, items: Sequence[Item]) -> tuple[list[Any], list[Segments], Any, Any, Any]:
        """Inline events (spilling oversized objects), parts, config, spill writes, px."""
        frames = [dumps(obj, serializer=self._serializer) for obj, _, _ in items]
        spill = self.spill_store
        big = [i for i, frame in enumerate(frames) if frame.nbytes > self.inline_limit]
        spilled: list[str] = []
        writes: Sequence[tuple[str, Any]] = ()
        px = None
        if spill is not None and big:
            spilled, writes, px = self._store(spill, [items[i][0] for i in big])
        keys = dict(zip(big, spilled, strict=True)) if spilled else {}
        events: list[dict[str, Any]] = []
        parts: list[Segments] = []
        for index, (item, frame) in enumerate(zip(items, frames, strict=True)):
            if index in keys:
                events.append(_key_event(keys[index], item))
            else:
                events.append({"type": "obj", "metadata": item[2], "part": len(parts)})
                parts.append(frame)
        config = self._config(spill) if spill is not None and keys else None
        return events, parts, config, writes, px


def _key_event(key: str, item: Item) -> dict[str, Any]:
    return {"type": "key", "key": key, "evict": item[1], "metadata": item[2]}

"""Stream events and their wire codec: versioned JSON envelopes, never pickled.

A producer flush publishes one :class:`EventBatch`: every event of one topic from
one producer, numbered consecutively (``seq`` is the first event's number; the
numbers continue across batches), so a consumer that sees every event of a topic
detects a gap and drops a duplicate. On the wire a batch is one
:func:`framework.serialize.encode_frame` frame: the JSON header is the batch, and
the parts are the inline objects, each a :func:`framework.serialize.dumps` frame.
Bytes are never base64'd.

Objects kept in a store travel as :class:`NewObjectKeyEvent` (key plus the batch's
:class:`~framework.store.StoreConfig`, which holds no secrets); small objects
travel inline as :class:`NewObjectEvent`; :class:`EndOfStreamEvent` ends a topic.

ProxyStore's event API (positional construction, ``topic`` on every event,
``NewObjectKeyEvent.from_key``/``get_key``, :func:`event_to_dict`/:func:`dict_to_event`,
single events in :func:`event_to_bytes`) comes from
:mod:`framework.stream._proxystore_events`, which these models inherit.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

from pydantic import ConfigDict, Field, ValidationError

from framework.buffers import BytesLike, Segments
from framework.exceptions import (
    FramingError,
    MalformedFrameError,
    SerializationError,
    UnsupportedVersionError,
)
from framework.serialize import Serializer, decode_frame, dumps, encode_frame, loads
from framework.store.config import StoreConfig
from framework.stream._proxystore_events import (
    BatchAPI,
    EndOfStreamAPI,
    KeyEventAPI,
    ObjectEventAPI,
    dict_to_event,
    event_to_dict,
    with_event_fields,
)

__all__ = [
    "EVENT_VERSION",
    "EndOfStreamEvent",
    "Event",
    "EventBatch",
    "NewObjectEvent",
    "NewObjectKeyEvent",
    "bytes_to_event",
    "check_origin",
    "decode_message",
    "dict_to_event",
    "encode_envelope",
    "encode_message",
    "event_to_bytes",
    "event_to_dict",
]

#: Version of the event envelope (the ``v`` field of every batch).
EVENT_VERSION = 1


class NewObjectEvent(ObjectEventAPI):
    """A new object carried inline (the topic has no store).

    Attributes:
        metadata: The producer's metadata for the object (JSON values).
        part: On the wire, the index of the message part holding the serialized
            object; ``-1`` when :attr:`obj` holds the object itself (event-level shims).
        obj: The object, in-process only (never encoded into the envelope).
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["obj"] = "obj"
    metadata: dict[str, Any] = Field(default_factory=dict)
    part: int = -1
    obj: Any = Field(default=None, exclude=True)


class NewObjectKeyEvent(KeyEventAPI):
    """A new object kept in the batch's store under :attr:`key`.

    Attributes:
        key: The object's key in the store.
        evict: Delete the object from the store once it is consumed.
        metadata: The producer's metadata for the object (JSON values).
        spilled: The topic has no store: the object was too big to ride inline and
            went to the spill store, so consumers hand it over as an inline object
            (the object itself, not a proxy). Left out of the envelope when False.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["key"] = "key"
    key: str
    evict: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)
    spilled: bool = False


class EndOfStreamEvent(EndOfStreamAPI):
    """The topic has ended: consumers stop after every earlier event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["eos"] = "eos"


#: Any event; the ``type`` field tells them apart.
Event = Annotated[
    Union[NewObjectEvent, NewObjectKeyEvent, EndOfStreamEvent], Field(discriminator="type")
]


class EventBatch(BatchAPI):
    """Consecutive events of one topic from one producer.

    Attributes:
        v: Envelope version.
        topic: The topic of every event in the batch.
        producer: Unique id of the producer that made the batch.
        epoch: Id of the producer's run (:func:`new_epoch`): numbering restarts at 0 in
            a new run, so a restarted producer that keeps its ``producer`` id is told from
            a replay, and a run that started before the one a consumer follows is not
            taken for a restart.
        seq: Sequence number of the first event; event ``i`` has ``seq + i``.
        store_config: Config of the store holding the batch's keyed objects, as the
            JSON object of a :class:`~framework.store.StoreConfig` (validated by
            :meth:`config`, once per distinct config by the consumer).
        events: The events, in order.
        beat: Seconds between the producer's heartbeats (batches without events, sent
            while it is open and the topic has not ended, when it has published nothing
            else for that long); 0 when it closed without ending the topic; None when
            it sends none. A consumer that sees every message counts a producer silent
            for a few of them as gone.
    """

    model_config = ConfigDict(extra="forbid")

    v: int = EVENT_VERSION
    topic: str
    producer: str = ""
    epoch: str = ""
    seq: int = Field(default=0, ge=0)
    store_config: dict[str, Any] | None = None
    events: list[Event] = Field(default_factory=list)
    beat: float | None = Field(default=None, ge=0)

    @property
    def next_seq(self) -> int:
        """Sequence number that follows this batch's last event."""
        return self.seq + len(self.events)

    def config(self) -> StoreConfig | None:
        """The validated store config, or ``None`` if the batch names no store.

        Raises:
            ConfigurationError: If the config is invalid (or carries a secret).
        """
        return None if self.store_config is None else StoreConfig(**self.store_config)


def new_epoch() -> str:
    """A new run's id: when it started (ms since the Unix epoch, hex), ``-``, 8 random hex."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(4)}"


def epoch_started(epoch: str) -> int | None:
    """When run ``epoch`` started (ms since the Unix epoch), or None if it does not say.

    Producers of earlier versions named a run by random hex alone.
    """
    head, dash, _ = epoch.partition("-")
    if not dash or not head:
        return None
    try:
        return int(head, 16)
    except ValueError:
        return None


def encode_message(
    batch: EventBatch, parts: Sequence[Segments | BytesLike] = (), *, secret: bytes | None = None
) -> Segments:
    """Frame ``batch`` with the serialized inline objects its events point at.

    Args:
        batch: The envelope; each :class:`NewObjectEvent` names its part by index.
        parts: Serialized inline objects (:func:`framework.serialize.dumps` frames).
        secret: Sign the message with this shared HMAC key.

    Returns:
        The message, zero-copy over ``parts``.

    Raises:
        SerializationError: If the metadata is not JSON-serialisable.
    """
    try:
        header = batch.model_dump(mode="json", exclude_defaults=False)
    except (ValueError, TypeError) as exc:
        msg = f"Events of topic {batch.topic!r} have metadata that is not JSON: {exc}"
        raise SerializationError(msg) from exc
    return encode_envelope(header, parts, secret=secret)


def encode_envelope(
    header: dict[str, Any], parts: Sequence[Segments | BytesLike] = (), *, secret: bytes | None
) -> Segments:
    """Frame an envelope given in its wire form (the JSON object of an :class:`EventBatch`).

    The one encoder of event messages: :func:`encode_message` and the producer's
    batch builder (which builds the wire form directly, for speed) both end here.

    Args:
        header: The batch as plain JSON data; ``v`` is set here.
        parts: Serialized inline objects.
        secret: Sign the message with this shared HMAC key.
    """
    header["v"] = EVENT_VERSION
    return encode_frame(header, parts, secret=secret)


def decode_message(
    data: BytesLike | Segments, *, secret: bytes | None = None
) -> tuple[EventBatch, list[memoryview]]:
    """Parse a message into its batch and the serialized inline objects.

    Args:
        data: The message.
        secret: Verify the message's HMAC with this key before anything else.

    Returns:
        The batch and the message parts (views of ``data``).

    Raises:
        UnsupportedVersionError: If the frame or the envelope has another version.
        FramingError: If the message is not an event batch (malformed, truncated).
        SecurityError: If ``secret`` is set and the message is unsigned or altered.
    """
    header, parts = decode_frame(data, secret=secret)
    version = header.get("v")
    if isinstance(version, int) and version != EVENT_VERSION:
        msg = f"The event batch has envelope version {version}; this build speaks {EVENT_VERSION}."
        raise UnsupportedVersionError(msg)
    try:
        batch = EventBatch.model_validate(header)
    except ValidationError as exc:
        raise FramingError(f"The message is not a valid event batch: {exc}") from exc
    for event in batch.events:
        if isinstance(event, NewObjectEvent) and not 0 <= event.part < len(parts):
            msg = f"An inline object of topic {batch.topic!r} points at missing part {event.part}."
            raise FramingError(msg)
    return batch, parts


#: Fields of a batch that say where it comes from: a consumer orders and ends a topic
#: per producer run by them, so a message without them is not a producer's.
_ORIGIN = ("producer", "epoch", "seq")


def check_origin(batch: EventBatch) -> None:
    """Refuse a decoded message that does not name its producer, run and sequence number.

    The model's defaults (``producer=""``, ``epoch=""``, ``seq=0``) let ProxyStore-style
    code build a batch from a topic and events alone; a consumer must not take such a
    message off the wire for one, or it would wait forever for a producer that never was.

    Raises:
        MalformedFrameError: If ``producer``, ``epoch`` or ``seq`` is missing, or
            ``producer`` or ``epoch`` is empty.
    """
    given = batch.model_fields_set
    missing = [name for name in _ORIGIN if name not in given or getattr(batch, name) == ""]
    if missing:
        raise MalformedFrameError(
            f"A message of topic {batch.topic!r} is not a producer's event batch: it has no "
            f"{', '.join(missing)}. It was skipped."
        )


def event_to_bytes(
    event: EventBatch | Event, *, serializer: Serializer | None = None, secret: bytes | None = None
) -> bytes:
    """Encode a batch or a single event (ProxyStore's name); inline objects go in ``obj``.

    A batch becomes a wire message (:func:`encode_message`); a single event a frame
    whose JSON header is its :func:`event_to_dict` form. Nothing is pickled but the
    inline objects, each in its own frame.

    Args:
        event: The batch or event; inline objects are serialized into message parts.
        serializer: Serializer of the inline objects (default: raw or pickle).
        secret: Sign the message with this shared HMAC key.

    Returns:
        The message as one ``bytes``.

    Raises:
        SerializationError: If metadata is not JSON or an object cannot be serialized.
    """
    if not isinstance(event, EventBatch):
        header = event_to_dict(event)
        obj = header.pop("obj", None)
        parts = [dumps(obj, serializer=serializer)] if isinstance(event, NewObjectEvent) else []
        try:
            return encode_frame({"v": EVENT_VERSION, "event": header}, parts, secret=secret).join()
        except (ValueError, TypeError) as exc:
            raise SerializationError(f"An event's metadata is not JSON: {exc}") from exc
    parts = []
    events: list[Any] = []
    for item in event.events:
        if isinstance(item, NewObjectEvent) and item.part < 0:
            parts.append(dumps(item.obj, serializer=serializer))
            item = item.model_copy(update={"part": len(parts) - 1})
        events.append(item)
    return encode_message(event.model_copy(update={"events": events}), parts, secret=secret).join()


def bytes_to_event(
    data: BytesLike | Segments, *, secret: bytes | None = None, allow_pickle: bool = True
) -> EventBatch | Event:
    """Decode :func:`event_to_bytes` output into the batch or event it was.

    Every event gets its ``topic`` (and key events their ``store_config``) as in
    ProxyStore; inline objects are deserialized into ``obj``.

    Args:
        data: The message.
        secret: Verify the message's HMAC with this key first.
        allow_pickle: Refuse inline objects that would need unpickling.

    Returns:
        The batch or event.

    Raises:
        FramingError: If the message is not an event batch or event.
        SecurityError: If ``secret`` is set and the message is unsigned or altered.
        DeserializationError: If an inline object cannot be deserialized.
    """
    header, parts = decode_frame(data, secret=secret)
    if isinstance(header.get("event"), dict):
        single = dict(header["event"])
        if single.get("event_type") == "NEW_OBJECT":
            if len(parts) != 1:
                raise FramingError("A single object event must carry exactly one object.")
            single["obj"] = loads(parts[0], allow_pickle=allow_pickle)
        event: EventBatch | Event = dict_to_event(single)
        return event
    batch, parts = decode_message(data, secret=secret)
    for item in batch.events:
        if isinstance(item, NewObjectEvent):
            # The message's MAC (checked above) covers the nested frame.
            item.obj = loads(parts[item.part], allow_pickle=allow_pickle)
            item.part = -1
    filled: EventBatch = with_event_fields(batch)
    return filled

"""ProxyStore's event API (``proxystore.stream.events``) on the framework's event models.

The event models of :mod:`framework.stream.events` inherit these bases, which add
ProxyStore's construction forms and accessors without touching the wire format:

* ``EventBatch(topic, events)``, ``NewObjectEvent(topic, obj, metadata)``,
  ``NewObjectKeyEvent(topic, key_type, raw_key, evict, metadata, store_config)`` and
  ``EndOfStreamEvent(topic)`` (positional or by keyword);
* every event has a ``topic``, and a key event its ``store_config``: both live in the
  batch on the wire (never repeated per event) and are filled in from it;
* ``NewObjectKeyEvent.from_key(key, *, evict, metadata, store_config, topic)`` and
  ``.get_key()`` (keys are strings: no key class is ever imported from data);
* :func:`event_to_dict` / :func:`dict_to_event`, tagged with ProxyStore's
  ``event_type`` names, on single events and batches.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from framework.exceptions import ConfigurationError, FramingError
from framework.store.config import StoreConfig

__all__ = [
    "BatchAPI",
    "EndOfStreamAPI",
    "KeyEventAPI",
    "ObjectEventAPI",
    "dict_to_event",
    "event_to_dict",
    "with_event_fields",
]

#: ProxyStore's ``event_type`` tag -> the framework class (filled as the classes are defined).
_TYPES: dict[str, type[_EventAPI]] = {}


class _EventAPI(BaseModel):
    """Positional construction in ProxyStore's field order, and the ``event_type`` tag."""

    #: ProxyStore's ``event_type`` name of the class.
    event_type: ClassVar[str] = ""
    #: Field names of ProxyStore's positional arguments, in order.
    positional: ClassVar[tuple[str, ...]] = ()
    #: Arguments that :meth:`_prepare` rewrites (it runs only when one is given).
    prepared: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, *args: Any, **data: Any) -> None:
        if args:
            self._positional_into(args, data)
        if not self.prepared.isdisjoint(data):
            data = self._prepare(data)
        # BaseModel.__init__ does exactly this; calling it directly keeps the producer's
        # per-event construction about as cheap as before these construction forms existed.
        self.__pydantic_validator__.validate_python(data, self_instance=self)

    # Pydantic calls a model's own __init__ when it validates nested dicts (decoding every
    # event of a message) unless that __init__ is marked as the base one. These forms are
    # for callers only: decoding validates the wire fields directly, as before.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def _positional_into(self, args: tuple[Any, ...], data: dict[str, Any]) -> None:
        if len(args) > len(self.positional):
            raise TypeError(
                f"{type(self).__name__} takes at most {len(self.positional)} positional "
                f"arguments ({', '.join(self.positional)}), got {len(args)}."
            )
        for name, value in zip(self.positional, args, strict=False):
            if name in data:
                raise TypeError(f"{type(self).__name__} got {name!r} twice.")
            data[name] = value

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.event_type:  # the most derived class wins: the wire model over its API base
            _TYPES[cls.event_type] = cls

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build the event from its :func:`event_to_dict` form (without ``event_type``)."""
        return cls(**data)


class ObjectEventAPI(_EventAPI):
    """ProxyStore's ``NewObjectEvent(topic, obj, metadata)``."""

    event_type: ClassVar[str] = "NEW_OBJECT"
    positional: ClassVar[tuple[str, ...]] = ("topic", "obj", "metadata")

    topic: str = Field(default="", exclude=True)


class EndOfStreamAPI(_EventAPI):
    """ProxyStore's ``EndOfStreamEvent(topic)``."""

    event_type: ClassVar[str] = "END_OF_STREAM"
    positional: ClassVar[tuple[str, ...]] = ("topic",)

    topic: str = Field(default="", exclude=True)


class KeyEventAPI(_EventAPI):
    """ProxyStore's ``NewObjectKeyEvent``: ``from_key``, ``get_key``, ``store_config``."""

    event_type: ClassVar[str] = "NEW_OBJECT_KEY"
    positional: ClassVar[tuple[str, ...]] = (
        "topic",
        "key_type",
        "raw_key",
        "evict",
        "metadata",
        "store_config",
    )

    prepared: ClassVar[frozenset[str]] = frozenset({"key_type", "raw_key", "store_config"})

    topic: str = Field(default="", exclude=True)
    store_config: StoreConfig | None = Field(default=None, exclude=True)

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if "raw_key" in data or "key_type" in data:
            # ProxyStore spells a key as its class path and fields; here keys are strings.
            key_type = data.pop("key_type", "str")
            raw = data.pop("raw_key", None)
            if key_type not in ("str", "builtins.str") or not _one_str(raw):
                raise ConfigurationError(
                    f"A key event's key is one string, got key_type={key_type!r}, raw_key={raw!r}."
                )
            data.setdefault("key", raw[0])
        config = data.get("store_config")
        if config is not None and not isinstance(config, StoreConfig):
            data["store_config"] = StoreConfig(**config)
        return data

    @classmethod
    def from_key(
        cls,
        key: str,
        *,
        evict: bool,
        metadata: dict[str, Any],
        store_config: StoreConfig,
        topic: str,
    ) -> Any:
        """Build the event of an object stored under ``key`` (ProxyStore's signature)."""
        return cls(topic=topic, key=key, evict=evict, metadata=metadata, store_config=store_config)

    def get_key(self) -> str:
        """Return the object's key in its store."""
        key: str = getattr(self, "key")  # noqa: B009 - the field is declared by the subclass
        return key

    @property
    def key_type(self) -> str:
        """ProxyStore's key class path: keys are plain strings here."""
        return "builtins.str"

    @property
    def raw_key(self) -> list[str]:
        """ProxyStore's key fields: the one string."""
        return [self.get_key()]


class BatchAPI(_EventAPI):
    """ProxyStore's ``EventBatch(topic, events)``; the store config comes from the events."""

    event_type: ClassVar[str] = "EVENT_BATCH"
    positional: ClassVar[tuple[str, ...]] = ("topic", "events")
    prepared: ClassVar[frozenset[str]] = frozenset({"events", "store_config"})

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        if data.get("store_config") is None:
            configs = {
                e.store_config.model_dump_json(): e.store_config
                for e in data.get("events", ())
                if isinstance(e, KeyEventAPI) and e.store_config is not None
            }
            if len(configs) > 1:
                raise ConfigurationError(
                    f"The key events of a batch of topic {data.get('topic')!r} name "
                    f"{len(configs)} stores; a batch holds the objects of one store."
                )
            if configs:
                data["store_config"] = next(iter(configs.values())).model_dump(mode="json")
        elif isinstance(data["store_config"], StoreConfig):
            data["store_config"] = data["store_config"].model_dump(mode="json")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build the batch from its :func:`event_to_dict` form (without ``event_type``)."""
        events = [dict_to_event(dict(e)) for e in data.get("events", ())]
        return cls(**{**data, "events": events})


def _one_str(raw: Any) -> bool:
    return isinstance(raw, (list, tuple)) and len(raw) == 1 and isinstance(raw[0], str)


def with_event_fields(batch: Any) -> Any:
    """Return ``batch`` with each event's ``topic`` (and key events' ``store_config``) set.

    On the wire both belong to the batch; ProxyStore's events carry them each.
    """
    config = batch.config()
    events = []
    for event in batch.events:
        update: dict[str, Any] = {"topic": batch.topic}
        if isinstance(event, KeyEventAPI):
            update["store_config"] = config
        events.append(event.model_copy(update=update))
    return batch.model_copy(update={"events": events})


def event_to_dict(event: Any) -> dict[str, Any]:
    """Return the event (or batch) as a dict tagged with ProxyStore's ``event_type``.

    Values are JSON types, except a :class:`NewObjectEvent`'s ``obj``, kept as is.

    Raises:
        TypeError: If ``event`` is not an event or batch.
    """
    if not isinstance(event, _EventAPI):
        raise TypeError(f"Not an event or event batch: {type(event).__name__}.")
    data = event.model_dump(mode="json", exclude={"events", "obj"})
    data.pop("type", None)  # the wire's discriminator; event_type tells them apart here
    if isinstance(event, BatchAPI):
        data["events"] = [event_to_dict(e) for e in getattr(event, "events", ())]
    if "topic" in type(event).model_fields:
        data["topic"] = getattr(event, "topic", "")
    if isinstance(event, KeyEventAPI):
        config = event.store_config
        data["store_config"] = None if config is None else config.model_dump(mode="json")
    if isinstance(event, ObjectEventAPI):
        data.pop("part", None)
        data["obj"] = getattr(event, "obj", None)
    data["event_type"] = event.event_type
    return data


def dict_to_event(data: dict[str, Any]) -> Any:
    """Rebuild an event (or batch) from :func:`event_to_dict` output.

    Raises:
        FramingError: If ``data`` has no known ``event_type`` or does not fit it.
    """
    fields = dict(data)
    kind = fields.pop("event_type", None)
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FramingError(f"Unknown event_type {kind!r}; known: {', '.join(sorted(_TYPES))}.")
    try:
        return cls.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise FramingError(f"Not a valid {kind} event: {exc}") from exc

"""How a producer reaches its publisher: chosen once, from the publisher's capabilities.

``isinstance`` checks against runtime protocols are slow, so the producer picks a
send function per publisher at construction instead of per batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, cast

from framework.exceptions import ConfigurationError
from framework.pubsub.protocols import AtomicPublisher, SegmentsPublisher, Unset
from framework.store import Encoded, StagedBatch, StagingStore, Store
from framework.stream._backlog import (
    DEFAULT_BACKLOG_BYTES,
    DEFAULT_BACKLOG_OBJECTS,
    BacklogBound,
)
from framework.stream._building import Fuse, Outgoing
from framework.stream._proxystore_events import with_event_fields
from framework.stream.protocols import EventPublisher, Publisher

__all__ = [
    "Watching",
    "beats",
    "check_args",
    "check_filter",
    "check_publisher",
    "check_signed",
    "checked_stores",
    "default_bound",
    "fuser",
    "sender",
    "sign_records",
    "topic_check",
    "watching",
]


class Watching(Protocol):
    """A durable publisher on which heartbeats renew a producer's alive key."""

    def watch(self, source: str, ttl: float) -> None:
        """Keep ``source``'s alive key ``ttl`` s past each of its messages and beats."""

    def keep_alive(self, topic: str, source: str, *, closing: bool = False) -> None:
        """One heartbeat; ``closing``: no more come, and the topic stays open."""


def check_args(
    batch_size: int, linger: float | None, inline_limit: int, heartbeat: float | None = None
) -> None:
    if type(batch_size) is not int or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}.")
    for name, value in (("linger", linger), ("heartbeat", heartbeat)):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        if value is not None and not (number and value > 0):
            raise ConfigurationError(
                f"{name} must be a positive number of seconds or None, got {value!r}."
            )
    if type(inline_limit) is not int or inline_limit < 0:
        raise ConfigurationError(f"inline_limit must be a non-negative int, got {inline_limit!r}.")


def checked_stores(stores: Any, default_store: Any, spill_store: Any) -> dict[str, Store | None]:
    """The producer's ``stores`` as a dict, every store argument checked.

    Raises:
        ConfigurationError: If ``stores`` is not a mapping of str topics to stores (or
            None), or ``default_store`` or ``spill_store`` is not a store (or None).
    """
    if stores is None:
        stores = {}
    if not isinstance(stores, Mapping):
        raise ConfigurationError(
            f"stores must be a mapping of topic to Store (or None), got {stores!r:.80} "
            f"({type(stores).__name__})."
        )
    for topic, store in stores.items():
        if not isinstance(topic, str):
            raise ConfigurationError(f"stores must be keyed by topic (str), got {topic!r}.")
        _check_store(f"stores[{topic!r}]", store)
    _check_store("default_store", default_store)
    if not isinstance(spill_store, Unset):
        _check_store("spill_store", spill_store)
    return dict(stores)


def _check_store(name: str, store: Any) -> None:
    if store is not None and not isinstance(store, Store):
        raise ConfigurationError(
            f"{name} must be a Store (e.g. RedisStore) or None, got {store!r:.80} "
            f"({type(store).__name__})."
        )


def check_publisher(publisher: Any) -> None:
    """Raise :class:`ConfigurationError` unless ``publisher`` can publish (duck-typed)."""
    sends = any(callable(getattr(publisher, m, None)) for m in ("send_message", "send_events"))
    if not sends or not callable(getattr(publisher, "close", None)):
        raise ConfigurationError(
            f"publisher must have send_message(topic, message) (or send_events) and "
            f"close(), as ProxyStore's publishers do; got {publisher!r:.80} "
            f"({type(publisher).__name__})."
        )


def check_filter(filter_: Any) -> None:
    """Raise :class:`ConfigurationError` if ``filter_`` is neither None nor callable."""
    if filter_ is not None and not callable(filter_):
        raise ConfigurationError(
            f"filter_ must be a callable taking an object's metadata (True drops it) or "
            f"None, got {filter_!r:.80} ({type(filter_).__name__})."
        )


def beats(publisher: Publisher) -> bool:
    """Whether a producer sends heartbeats through ``publisher``.

    Only where every consumer sees every message, and a message does not stay: Redis
    pub/sub (``heartbeats = True``). A durable stream would keep them all, and of a
    list or a consumer group each consumer would get only some.
    """
    return getattr(publisher, "heartbeats", False) is True and not isinstance(
        publisher, EventPublisher
    )


def watching(publisher: Publisher) -> Watching | None:
    """``publisher`` if heartbeats renew alive keys on it (``RedisStreamPublisher``)."""
    return cast(Watching, publisher) if getattr(publisher, "liveness", False) is True else None


def sign_records(publisher: Publisher, source: str, secret: bytes | None) -> None:
    """With a secret, have ``publisher`` sign ``source``'s records in producers hashes.

    Durable and list publishers record each producer's state in a hash that consumers
    end topics by; signed, a state forged in Redis cannot end them.
    """
    sign = getattr(publisher, "sign_records", None)
    if secret is not None and callable(sign):
        sign(source, secret)


def default_bound(publisher: Publisher) -> BacklogBound | None:
    """Back-pressure by default on durable publishers (whose messages stay), else off."""
    if getattr(publisher, "durable", False) is True:
        return BacklogBound(objects=DEFAULT_BACKLOG_OBJECTS, nbytes=DEFAULT_BACKLOG_BYTES)
    return None


def check_signed(secret: bytes | None, stores: Sequence[Any]) -> None:
    """With a secret, refuse stores that keep objects unsigned (consumers would refuse them).

    Raises:
        ConfigurationError: If ``secret`` is set and a store's config is not signed.
    """
    if secret is None:
        return
    for store in stores:
        if isinstance(store, Store) and not store.config().options.get("signed"):
            raise ConfigurationError(
                f"Store {store.name!r} does not sign its objects, but the producer has a "
                "secret: consumers with the secret refuse unsigned objects. Build the store "
                "with the same secret."
            )


def topic_check(publisher: Publisher) -> Callable[[str], None] | None:
    """``publisher.check_topic`` if it has one: it tells topics it can never publish to.

    Asked before anything is buffered for a new topic (``QueuePublisher`` has it): a
    message that can never be published would stay pending, and fail every later flush
    and ``close()``.
    """
    check = getattr(publisher, "check_topic", None)
    return cast(Callable[[str], None], check) if callable(check) else None


def sender(publisher: Publisher, source: str) -> Callable[[str, Outgoing], None]:
    """Pick, once, how batches reach ``publisher`` (isinstance on protocols is slow).

    An :class:`~framework.pubsub.AtomicPublisher` gets the batch's staged store writes
    with the message; any other message publisher gets the message alone (its objects
    were stored before the batch was built); event-level publishers get the batch.
    """
    if isinstance(publisher, EventPublisher):
        events = publisher
        # ProxyStore's event publishers read topic and store config on each event.
        return lambda topic, out: events.send_events(with_event_fields(out.batch))
    if isinstance(publisher, AtomicPublisher):
        atomic = publisher

        def publish(topic: str, out: Outgoing) -> None:
            atomic.publish(
                topic,
                out.message,
                commands=out.commands,
                final=out.final,
                source=source,
                retry=out.retry,
            )

        return publish
    segments = isinstance(publisher, SegmentsPublisher)
    messages = cast(Any, publisher)
    return lambda topic, out: messages.send_message(
        topic, out.message if segments else out.message.join()
    )


def fuser(publisher: Publisher) -> Fuse | None:
    """Stage store writes for the publisher when it can run them with the message.

    A :class:`~framework.store.StagingStore` on the publisher's own connection hands
    its writes to the publisher (:meth:`~framework.store.RedisStore.stage_encoded`),
    which runs them before the message that names the keys, atomically; other stores
    are written by ``put_encoded`` before the message is built.
    """
    if not isinstance(publisher, AtomicPublisher):
        return None
    connection = publisher.connection
    known: dict[int, tuple[Store, bool]] = {}  # a protocol isinstance costs ~10 us

    def fuse(store: Store, values: Sequence[Encoded], ttl: float | None) -> StagedBatch | None:
        seen = known.get(id(store))
        if seen is None or seen[0] is not store:
            stages = isinstance(store, StagingStore) and store.connection is connection
            seen = known[id(store)] = (store, stages)
        return cast(StagingStore, store).stage_encoded(values, ttl=ttl) if seen[1] else None

    return fuse

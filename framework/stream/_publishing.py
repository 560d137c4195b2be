"""How a producer reaches its publisher: chosen once, from the publisher's capabilities.

``isinstance`` checks against runtime protocols are slow, so the producer picks a
send function per publisher at construction instead of per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from framework.exceptions import ConfigurationError
from framework.pubsub.protocols import (
    FinalMessagePublisher,
    PipelinePublisher,
    SegmentsPublisher,
)
from framework.store import RedisStore, StagedBatch, Store
from framework.stream._building import Fuse, Outgoing
from framework.stream._proxystore_events import with_event_fields
from framework.stream.protocols import EventPublisher, Publisher

__all__ = ["check_args", "check_signed", "fuser", "sender"]


def check_args(batch_size: int, linger: float | None, inline_limit: int) -> None:
    if type(batch_size) is not int or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive int, got {batch_size!r}.")
    if linger is not None and not linger > 0:
        raise ConfigurationError(f"linger must be a positive number of seconds, got {linger!r}.")
    if type(inline_limit) is not int or inline_limit < 0:
        raise ConfigurationError(f"inline_limit must be a non-negative int, got {inline_limit!r}.")


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


def sender(publisher: Publisher) -> Callable[[str, Outgoing], None]:
    """Pick, once, how batches reach ``publisher`` (isinstance on protocols is slow)."""
    if isinstance(publisher, EventPublisher):
        events = publisher
        # ProxyStore's event publishers read topic and store config on each event.
        return lambda topic, out: events.send_events(with_event_fields(out.batch))
    final = publisher if isinstance(publisher, FinalMessagePublisher) else None
    pipelined = publisher if isinstance(publisher, PipelinePublisher) else None
    segments = isinstance(publisher, SegmentsPublisher)
    messages = cast(Any, publisher)

    def send(topic: str, out: Outgoing) -> None:
        if out.writes and pipelined is not None:
            pipelined.send_message_with_writes(
                topic, out.message, out.writes, px=out.px, final=out.final
            )
        elif out.final and final is not None:
            final.send_final_message(topic, out.message)
        else:
            messages.send_message(topic, out.message if segments else out.message.join())

    return send


def fuser(publisher: Publisher) -> Fuse | None:
    """Store-and-publish in one round trip when the publisher can pipeline writes.

    A ``RedisStore`` on the publisher's own connection stages its writes
    (:meth:`~framework.store.RedisStore.stage_batch`) and the publisher sends them in
    the round trip that publishes the keys; other stores are written by ``put_batch``.
    """
    if not isinstance(publisher, PipelinePublisher):
        return None
    connection = publisher.connection

    def fuse(store: Store, objs: Sequence[Any]) -> StagedBatch | None:
        # Exactly the class: a subclass may store differently from what it stages.
        if type(store) is not RedisStore or store.connection is not connection:
            return None
        return store.stage_batch(objs)

    return fuse

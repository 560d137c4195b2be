"""Consumer-side helpers: queued items, sequence checks, batched fetches (no Redis code)."""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import pydantic_core

from framework._core_errors import reworded
from framework._timeouts import checked_timeout
from framework.exceptions import (
    BackendError,
    ConfigurationError,
    FrameworkError,
    FramingError,
    MessageLossError,
    MissingSignatureError,
    ObjectNotFoundError,
)
from framework.proxy import Proxy
from framework.pubsub.protocols import DescribedSubscriber
from framework.serialize import loads
from framework.store import MISSING, Store, get_or_create_store
from framework.store.base import Unreadable
from framework.store.factory import StoreFactory
from framework.stream._building import approx_size
from framework.stream.events import EventBatch, NewObjectEvent, NewObjectKeyEvent
from framework.stream.protocols import Subscriber

__all__ = [
    "Entry",
    "LossPolicy",
    "check_args",
    "described",
    "fetch_run",
    "handing",
    "key_proxy",
    "report_loss",
    "resolve_inline",
    "select_run",
    "store_for",
    "until_stop",
    "warn_pickle_trust",
]

logger = logging.getLogger(__name__)

_UNFETCHED: Any = object()


@dataclass
class Entry:
    """One object event waiting to be handed to the user.

    Attributes:
        event: The object's event.
        batch: The batch it came in (topic, store config).
        parts: The message parts (inline objects).
        ack: Handing this entry over completes its message: acknowledge it.
        value: The fetched object, once fetched.
    """

    event: Union[NewObjectEvent, NewObjectKeyEvent]
    batch: EventBatch
    parts: list[memoryview]
    ack: bool = False
    value: Any = _UNFETCHED

    @property
    def fetched(self) -> bool:
        """Whether the object was fetched ahead (by a batched read)."""
        return self.value is not _UNFETCHED

    def result(self, missing_hint: str = "") -> Any:
        """Return the fetched object.

        Args:
            missing_hint: Added to the error if the object is missing.

        Raises:
            ObjectNotFoundError: If the store no longer had it.
            FramingError: If the stored value is not a frame (corrupt or overwritten);
                the message names the key, the topic and the store.
            SecurityError: If the stored value failed verification (named as above).
            SerializationError: If it could not be deserialized (named as above).
        """
        config = self.batch.store_config or {}
        key = getattr(self.event, "key", "")
        if self.value is MISSING:
            raise ObjectNotFoundError(
                key, str(config.get("name")), missing_hint, topic=self.batch.topic
            )
        if isinstance(self.value, Unreadable):
            error = self.value.error
            raise _located(error, key, self.batch.topic, str(config.get("name"))) from error
        return self.value


def _located(error: FrameworkError, key: str, topic: str, store: str) -> FrameworkError:
    """``error`` (of a stored object that cannot be read) again, naming what it is about.

    The store's own error knows only the bytes; the reader needs the key to inspect it.
    """
    return reworded(
        error, f"Object {key!r} of topic {topic!r} in store {store!r} cannot be read: {error}"
    )


@contextlib.contextmanager
def handing(entry: Entry, queue: deque[Any], handed: Callable[[Entry], None]) -> Iterator[None]:
    """Hand ``entry`` over: it counts as consumed (``handed``) only if the block succeeds.

    A transient failure (Redis unreachable, any non-framework error) puts it back at
    the front of ``queue``, so the next call tries again and a durable entry stays
    pending (redelivered to another member if this consumer dies). A permanent one
    (the object is gone, forged or unreadable) consumes it: it would fail forever.
    """
    try:
        yield
    except BackendError:
        queue.appendleft(entry)
        raise
    except FrameworkError:
        handed(entry)
        raise
    except BaseException:
        queue.appendleft(entry)
        raise
    handed(entry)


def check_args(
    subscriber: Any,
    on_loss: Any,
    timeout: float | None,
    *,
    secret: bytes | None,
    events: bool,
) -> None:
    """Check a consumer's arguments.

    Raises:
        ConfigurationError: If ``subscriber``, ``on_loss`` or ``timeout`` is invalid,
            or a secret is given with an event-level subscriber (it deserializes
            unverified).
    """
    reads = any(callable(getattr(subscriber, m, None)) for m in ("next_message", "next_events"))
    if not reads or not callable(getattr(subscriber, "close", None)):
        raise ConfigurationError(
            f"subscriber must have next_message() (or next_events) and close(), as "
            f"ProxyStore's subscribers do; got {subscriber!r:.80} ({type(subscriber).__name__})."
        )
    if not (on_loss in ("raise", "warn") or callable(on_loss)):
        raise ConfigurationError(f"on_loss must be 'raise', 'warn' or a callable: {on_loss!r}.")
    checked_timeout(timeout, "StreamConsumer")
    if secret is not None and events:
        raise ConfigurationError(
            "An event-level subscriber deserializes messages itself, so a consumer "
            "secret cannot be checked first; use a message-level subscriber."
        )


def until_stop(get: Callable[[], Any]) -> Generator[Any, None, None]:
    """Yield ``get()`` until it raises ``StopIteration``."""
    while True:
        try:
            yield get()
        except StopIteration:
            return


def resolve_inline(entry: Entry, allow_pickle: bool) -> Any:
    """Deserialize an inline object (its message's MAC, if any, is already checked)."""
    event = entry.event
    assert isinstance(event, NewObjectEvent)
    if event.part < 0:
        return event.obj
    return loads(entry.parts[event.part], allow_pickle=allow_pickle)


def store_for(batch: EventBatch, cache: dict[bytes, Store], *, signed: bool = False) -> Store:
    """Return the store of ``batch``'s keyed objects, rebuilt through the registry once.

    Args:
        batch: The batch naming the store.
        cache: Stores already found, by the JSON of their config.
        signed: Refuse a store that does not sign its objects (the consumer has a
            secret): nothing is read from it.

    Raises:
        MissingSignatureError: If ``signed`` and the store keeps objects unsigned.
        FramingError: If the batch names keys but no store.
        ConfigurationError: If the store config is invalid.
        UnknownStoreKindError: If the store's kind is not registered here.
    """
    if batch.store_config is None:
        raise FramingError(f"A batch of topic {batch.topic!r} names stored objects but no store.")
    # Configs repeat in every batch: look them up by their JSON, validate each only once.
    marker = pydantic_core.to_json(batch.store_config)
    store = cache.get(marker)
    if store is None:
        config = batch.config()
        assert config is not None
        if signed and not config.options.get("signed"):
            raise MissingSignatureError(
                f"Topic {batch.topic!r} names store {config.name!r}, which keeps its objects "
                "unsigned; this consumer has a secret and refuses unsigned objects."
            )
        store = cache[marker] = get_or_create_store(config)
    return store


def key_proxy(store: Store, key: str, *, evict: bool, allow_pickle: bool) -> Proxy[Any]:
    """A lazy proxy of ``key`` in ``store`` that refuses pickle unless ``allow_pickle``.

    The store was rebuilt from a config read from Redis: its serializer says nothing
    about what the consumer accepts, so the proxy carries the consumer's choice.
    """
    if allow_pickle:
        return store.proxy_from_key(key, evict=evict)
    return Proxy(StoreFactory(key, store.config(), evict=evict, store=store, allow_pickle=False))


def select_run(
    entry: Entry, queue: Iterable[Any], window: int, same_store: Callable[[EventBatch], bool]
) -> list[Entry]:
    """``entry`` and the unfetched stored objects queued after it, up to ``window``.

    The run stops at a reported loss, an object already fetched or another store.
    """
    run = [entry]
    for queued in queue:
        if len(run) >= window or not isinstance(queued, Entry) or queued.fetched:
            break
        if isinstance(queued.event, NewObjectEvent):
            continue
        same = queued.batch.store_config is entry.batch.store_config
        if not same and not same_store(queued.batch):
            break
        run.append(queued)
    return run


def fetch_run(store: Store, run: Sequence[Entry], *, evict: bool, allow_pickle: bool) -> int:
    """Fetch the objects of ``run`` in one round trip per evict flag; return their mean size.

    Absent and unreadable (forged, corrupt, or pickled when ``allow_pickle`` is False)
    objects are marked, not raised, so the others of the call are kept: an evicting
    read has deleted them already. ``allow_pickle`` is the consumer's: the store's
    config comes from the message, so its serializer decides nothing.
    """
    sizes = 0
    for flag in (True, False):
        group = [e for e in run if (evict and _evict_flag(e)) is flag]
        if not group:
            continue
        keys = [e.event.key for e in group]  # type: ignore[union-attr]
        values = store._get_each(keys, evict=flag, allow_pickle=allow_pickle)
        for entry, value in zip(group, values, strict=True):
            entry.value = value
            sizes += 0 if isinstance(value, Unreadable) else approx_size(value)
    return sizes // max(len(run), 1)


def _evict_flag(entry: Entry) -> bool:
    return bool(getattr(entry.event, "evict", False))


#: What to do about lost events: raise, warn (RuntimeWarning) or call a function.
LossPolicy = Union[Literal["raise", "warn"], Callable[[MessageLossError], None]]


def report_loss(loss: MessageLossError, policy: LossPolicy) -> None:
    """Log ``loss``, then raise it, warn about it or pass it on, as ``policy`` says.

    Raises:
        MessageLossError: ``loss`` itself, when ``policy`` is ``"raise"``.
    """
    logger.warning("%s", loss)
    if policy == "raise":
        raise loss
    if policy == "warn":
        warnings.warn(str(loss), RuntimeWarning, stacklevel=5)
    elif callable(policy):
        policy(loss)


@functools.cache
def warn_pickle_trust() -> None:
    """Say once per process that pickled data from Redis is trusted without a secret."""
    logger.warning(
        "A stream consumer without a secret unpickles what it reads from Redis: anyone "
        "who can write to that Redis can run code in this process. Configure a shared "
        "secret (producer and consumer), or pass allow_pickle=False."
    )


def described(subscriber: Subscriber) -> tuple[frozenset[str], bool]:
    """The subscriber's topics (empty if unknown) and whether it sees every event."""
    if isinstance(subscriber, DescribedSubscriber):
        return frozenset(subscriber.topics), bool(subscriber.complete)
    return frozenset(), False

"""One-round-trip paths between the stream layer and a ``RedisStore``.

With batch size 1 a flush is "store one object, publish one event", and a
consumer's read is "fetch and evict one object". Through the Store and Publisher
protocols alone that costs two round trips on the producer and a pipeline per
object on the consumer. When a topic's store is a :class:`~framework.store.RedisStore`
(exactly that class, unsigned, objects in one value), :class:`RedisFastPath`
prepares the same keys and values ``put_batch`` writes, so the publisher sends
them in the pipeline that carries the event, and reads them back with a single
``GETDEL``/``GET`` (or one pipeline for a batch). It mirrors the single-value case
of :mod:`framework.store.layout`; everything else (split, counted or signed
objects, other stores) returns ``None`` and takes the Store API.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from framework.connection import mapped_errors
from framework.exceptions import ConfigurationError
from framework.pubsub._raw import round_trip
from framework.serialize import dumps, get_serializer, loads
from framework.store import RedisStore, Store
from framework.store.layout import ObjectId
from framework.stream._building import Prepared

__all__ = ["FastPaths", "RedisFastPath"]


class RedisFastPath:
    """Direct writes and reads of single-value objects of one unsigned ``RedisStore``.

    Args:
        store: The store (see :meth:`for_store`).
    """

    def __init__(self, store: RedisStore) -> None:
        options = store.config().options
        self.store = store
        self.connection = store.connection
        self._serializer = get_serializer(str(options.get("serializer", "auto")))
        self._allow_pickle = options.get("serializer", "auto") in ("auto", "pickle")
        ttl = store.default_ttl
        self._px = None if ttl is None else max(1, round(ttl * 1000))
        self._errors = functools.partial(mapped_errors, url=self.connection.url())

    @classmethod
    def for_store(cls, store: Store | None) -> RedisFastPath | None:
        """A fast path for ``store``, or ``None`` when only the Store API fits."""
        if type(store) is not RedisStore or store.config().options.get("signed"):
            return None
        return cls(store)

    def prepare(self, objs: Sequence[Any]) -> Prepared | None:
        """Serialize ``objs`` into the writes ``put_batch`` would do (``None``: too large).

        Raises:
            SerializationError: If an object cannot be serialized.
        """
        if self.store.closed:
            return None  # let put_batch raise its ClosedError
        keys: list[str] = []
        writes: list[tuple[str, Any]] = []
        for obj in objs:
            frame = dumps(obj, serializer=self._serializer)
            oid = ObjectId.new(frame.nbytes, self.store.part_size, counted=False)
            if oid.parts != 1:
                return None  # split objects: the store writes their parts
            key = self.connection.keys.obj(str(oid))
            keys.append(key)
            writes.append((key, self.connection.bulk(frame)))
        return keys, writes, self._px

    def fetch(self, keys: Sequence[str], *, evict: bool, absent: Any) -> list[Any] | None:
        """Fetch (and evict) ``keys`` in one round trip; ``absent`` marks missing ones.

        Returns:
            The objects, or ``None`` when a key is not a single-value object.

        Raises:
            BackendError: If Redis failed.
            DeserializationError: If an object cannot be deserialized.
        """
        if self.store.closed:
            return None
        for key in keys:
            oid = _parse(self.connection, key)
            if oid is None or oid.parts != 1 or oid.counted:
                return None
        with self._errors(f"read {len(keys)} object(s) from {self.store.name!r}"):
            values = self._read(keys, evict)
        return [absent if v is None else loads(v, allow_pickle=self._allow_pickle) for v in values]

    def _read(self, keys: Sequence[str], evict: bool) -> list[Any]:
        conn = self.connection
        command = "GETDEL" if evict else "GET"
        client = conn.once if evict else conn.client
        replies = round_trip(client, [(command, key) for key in keys])
        if replies is not None:
            return replies
        if not evict and not conn.is_cluster:
            return list(conn.client.mget(keys))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.execute_command(command, key)
        return list(pipe.execute())


class FastPaths:
    """Caches the fast path (or its absence) of each store seen."""

    def __init__(self) -> None:
        self._paths: dict[int, tuple[Store, RedisFastPath | None]] = {}

    def get(self, store: Store, connection: Any = None) -> RedisFastPath | None:
        """The fast path of ``store``; with ``connection``, only if the store uses it."""
        cached = self._paths.get(id(store))
        if cached is None or cached[0] is not store:
            path = RedisFastPath.for_store(store)
            if path is not None and connection is not None and path.connection is not connection:
                path = None
            cached = self._paths[id(store)] = (store, path)
        return cached[1]


def _parse(connection: Any, key: str) -> ObjectId | None:
    try:
        return ObjectId.parse(connection.keys.oid_of(key))
    except (ConfigurationError, AttributeError):  # not one of its keys: the store decides
        return None

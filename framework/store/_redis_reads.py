"""The read side of :class:`~framework.store.RedisStore` (a mixin): fewest round trips.

Reads are where the layout's choices pay off or cost: the common batch of simple
objects (one value each, not counted) is one ``MGET`` or one round of ``GETDEL``;
split and counted objects need a transaction each, and on a cluster, where a
transaction cannot span slots, one round trip each. An evicting read that takes a
value it cannot decode writes it back, so a forged or corrupt object is left to inspect.
See :mod:`framework.store.redis` for the layout and the atomicity of counted reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from framework._raw import round_trip
from framework.buffers import BytesLike
from framework.connection import RedisConnection
from framework.exceptions import BackendError, StoreError
from framework.keys import KeySchema
from framework.store._getting import taken_unreadable
from framework.store._redis_keys import count_keys
from framework.store.base import KEEP_UNREADABLE, Unreadable, decoded
from framework.store.layout import ObjectId, join_parts
from framework.store.protocols import MISSING

if TYPE_CHECKING:
    from framework.store.codec import FrameCodec

__all__ = ["RedisReadMethods"]

# The store's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.store.redis")

# KEYS[1]: the remaining-reads counter; KEYS[2..]: every value of the object.
# A missing counter (object already gone) decrements to -1 and is deleted again.
_COUNTED_READ = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', unpack(KEYS)) end
return left
"""

#: Lifetime (ms) of a value that an evicting read took but could not decode, written back
#: so that it can be inspected (see ``KEEP_UNREADABLE``).
KEEP_UNREADABLE_MS = round(KEEP_UNREADABLE * 1000)

#: One read value: bytes, None when absent, or why a key holds no value (another type).
Value = BytesLike | StoreError | None


class RedisReadMethods:
    """Methods of a Redis store that fetch objects' values, in as few round trips as it can."""

    connection: RedisConnection
    name: str
    _keys: KeySchema
    _codec: FrameCodec
    _signed: bool

    if TYPE_CHECKING:  # provided by RedisKeyMethods, part of the same store

        def _parse(self, key: str) -> ObjectId | None: ...

        def _value_keys(self, oid: ObjectId) -> list[str]: ...

    def _get_objects(self, keys: list[str], *, evict: bool, allow_pickle: bool) -> list[Any]:
        oids = [self._parse(key) for key in keys]
        values = self._read_values(keys, oids, evict)
        decode = partial(self._codec.decode, allow_pickle=allow_pickle)
        raw_ok = not self._signed  # signed: every value is a frame
        objs: list[Any] = []
        for oid, value in zip(oids, values, strict=True):
            if value is None:
                objs.append(MISSING)
            elif isinstance(value, StoreError):
                objs.append(Unreadable(value))
            elif raw_ok and oid is not None and oid.raw:  # the object itself, no copy
                objs.append(value if type(value) is bytes else bytes(value))
            else:  # checked against the object it is stored as; a forged one spoils no other
                objs.append(decoded(partial(decode, uid=None if oid is None else oid.uid), value))
        if evict:
            self._put_back(taken_unreadable(keys, values, objs))
        return objs

    def _put_back(self, taken: list[tuple[str, BytesLike]]) -> None:
        """Write back the values an evicting read took but could not decode (one round trip).

        Only single-value objects are written back (a split or counted one would need its
        layout rebuilt); ``NX``, so a newer value wins.
        """
        kept = [(key, value) for key, value in taken if _is_simple(self._parse(key))]
        if not kept:
            return
        try:
            with self.connection.mapped_errors(f"keep {count_keys([k for k, _ in kept])}"):
                pipe = self.connection.client.pipeline(transaction=False)
                for key, value in kept:
                    pipe.set(key, value, nx=True, px=KEEP_UNREADABLE_MS)
                pipe.execute()
        except BackendError:  # the read itself succeeded: its other objects must not be lost
            logger.warning(
                "Could not write back unreadable object(s) %s.", kept[0][0], exc_info=True
            )

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[Value]:
        return self._read_values(keys, [self._parse(key) for key in keys], evict)

    def _read_values(
        self, keys: Sequence[str], oids: list[ObjectId | None], evict: bool
    ) -> list[Value]:
        """Each key's value; a key of another Redis type fails alone (a :class:`StoreError`).

        Anyone who can write to Redis can put a hash where a value was: that must not
        fail the batch's other objects, which an evicting read has already taken.
        """
        results: list[Value] = [None] * len(keys)
        with self.connection.mapped_errors(f"read {count_keys(keys)} from {self.name!r}"):
            if len(keys) == 1 and _is_simple(oids[0]):
                return [self._read_one(keys[0], evict)]  # no pipeline for one value
            if not self.connection.is_cluster and all(map(_is_simple, oids)):
                # The common case in one MGET or GETDELs: a simple object's key is its only
                # value key.
                simple_values = self._read_simple(keys, evict)
                if simple_values is not None:
                    return simple_values
            found = [(i, oid) for i, oid in enumerate(oids) if oid is not None]
            simple = [(i, oid) for i, oid in found if _is_simple(oid)]
            if self.connection.is_cluster:
                self._read_cluster(found, simple, evict, results)
            elif found:
                self._run(found, evict, results, transaction=len(simple) < len(found))
        return results

    def _read_simple(self, keys: Sequence[str], evict: bool) -> list[Value] | None:
        """Simple objects' values in one round trip; ``None`` if the client needs a pipeline."""
        if not evict:
            try:
                return list(self.connection.client.mget(keys))
            except ResponseError as exc:  # one key of another type fails MGET: read each
                _raise_unless_wrong_type(exc)
                return None
        # round_trip skips the ~14 us of pipeline overhead per batch (None: unsupported client).
        replies = round_trip(self.connection.once, [("GETDEL", k) for k in keys], errors=True)
        return None if replies is None else self._values(keys, replies)

    def _read_one(self, key: str, evict: bool) -> Value:
        try:
            if not evict:
                return self.connection.client.get(key)  # type: ignore[no-any-return]
            replies = round_trip(self.connection.once, [("GETDEL", key)])
            return self.connection.once.getdel(key) if replies is None else replies[0]  # type: ignore[no-any-return]
        except ResponseError as exc:
            return self._values([key], [exc])[0]

    def _values(self, keys: Sequence[str], replies: Sequence[Any]) -> list[Value]:
        """Replies as values: a wrong-type error names its key; any other error is raised."""
        for reply in replies:
            if isinstance(reply, ResponseError):
                _raise_unless_wrong_type(reply)
        return [
            StoreError(
                f"Key {key!r} of store {self.name!r} holds no object's value but another "
                f"Redis type (overwritten or forged): {reply}"
            )
            if isinstance(reply, ResponseError)
            else reply
            for key, reply in zip(keys, replies, strict=True)
        ]

    def _read_cluster(
        self,
        found: list[tuple[int, ObjectId]],
        simple: list[tuple[int, ObjectId]],
        evict: bool,
        results: list[Value],
    ) -> None:
        """Simple objects in one cross-slot pipeline; the others in one transaction each."""
        if simple:
            self._run(simple, evict, results, transaction=False)
        for item in found:
            if not _is_simple(item[1]):
                self._run([item], evict, results, transaction=True)

    def _run(
        self,
        items: list[tuple[int, ObjectId]],
        evict: bool,
        results: list[Value],
        *,
        transaction: bool,
    ) -> None:
        """Queue the reads of ``items`` in one pipeline, execute it, fill ``results``."""
        mutates = evict or any(oid.counted for _, oid in items)
        client = self.connection.once if mutates else self.connection.client
        pipe = client.pipeline(transaction=transaction)
        for _, oid in items:
            self._queue_read(pipe, oid, evict)
        replies = iter(pipe.execute(raise_on_error=False))
        for i, oid in items:
            keys = self._value_keys(oid)
            values = self._values(keys, [next(replies) for _ in range(oid.parts)])
            if oid.counted:
                _raise_unless_wrong_type(next(replies))  # its reply: the values tell presence
            wrong = [v for v in values if isinstance(v, StoreError)]
            if wrong:
                results[i] = wrong[0]
            elif all(v is not None for v in values):
                results[i] = values[0] if oid.parts == 1 else join_parts(values)  # type: ignore[arg-type]

    def _queue_read(self, pipe: Any, oid: ObjectId, evict: bool) -> None:
        value_keys = self._value_keys(oid)
        for key in value_keys:
            if evict:
                pipe.getdel(key)
            else:
                pipe.get(key)
        if oid.counted:
            counter = self._keys.obj_readers(str(oid))
            if evict:
                pipe.delete(counter)
            else:
                # execute_command: RedisCluster pipelines do not implement eval().
                pipe.execute_command(
                    "EVAL", _COUNTED_READ, 1 + len(value_keys), counter, *value_keys
                )


def _raise_unless_wrong_type(reply: Any) -> None:
    """Raise an error reply, unless it says that a key holds another Redis type."""
    if isinstance(reply, ResponseError) and not str(reply).startswith("WRONGTYPE"):
        raise reply


def _is_simple(oid: ObjectId | None) -> bool:
    """Whether ``oid`` is one plain value: neither split nor counted."""
    return oid is not None and oid.parts == 1 and not oid.counted

"""``RedisStore``: objects as Redis string values, cluster-safe, batched, evict-on-read.

Layout (see :mod:`framework.store.layout`): one object is ``fw:obj:{<oid>}``, plus
``fw:obj:{<oid>}:<n>`` parts when its frame exceeds ``part_size`` and a
``fw:obj:{<oid>}:readers`` counter for ``readers=N``; one hash tag per object, so every
per-object multi-key command and transaction stays in one cluster slot.

Round trips: ``put_batch`` is one ``MSET`` (standalone, no TTL) or one pipeline of
``SET ... PX``; ``get_batch`` is one ``MGET`` or one pipeline. On a cluster, objects
that need a transaction (split or counted ones) take one extra round trip each,
because a transaction cannot span slots.

Atomicity: ``evict=True`` reads with ``GETDEL`` (inside ``MULTI`` for split objects),
so two concurrent readers never both get an object. A counted read is
``MULTI; GET...; EVAL <decrement, delete at zero>; EXEC``: the value never passes
through Lua (no copy), and the N-th read deletes every key of the object in the same
atomic step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from framework.buffers import BytesLike, Segments
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.keys import DEFAULT_PREFIX
from framework.settings import RedisSettings
from framework.store.base import BaseStore, _constructor_options
from framework.store.config import StoreConfig
from framework.store.layout import PART_BYTES, ObjectId, join_parts, new_uid, split_frame

__all__ = ["RedisStore"]

# KEYS[1]: the remaining-reads counter; KEYS[2..]: every value of the object.
# A missing counter (object already gone) decrements to -1 and is deleted again.
_COUNTED_READ = """
local left = redis.call('DECR', KEYS[1])
if left <= 0 then redis.call('DEL', unpack(KEYS)) end
return left
"""

#: Values up to this size are joined into one ``bytes`` before sending: for small values
#: one packer item is cheaper than several views (measured: 1 KB batches ~2x faster).
JOIN_BELOW = 64 * 1024

_SECRET_FIELDS = ("username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


class RedisStore(BaseStore):
    """Object store on Redis (standalone or cluster) with the framework's key schema.

    Args:
        name: Name of the store (its registry name).
        connection: Where to store objects; not closed by the store unless the store
            built it (:meth:`from_config`).
        serializer: Name of a registered serializer (see :class:`BaseStore`).
        secret: Shared HMAC key: objects are signed and verified.
        ttl: Default lifetime of objects in seconds (``PX``); ``None`` = no expiry.
        part_size: Largest Redis value written; bigger objects are split into parts.
            Defaults to just under Redis's 512 MiB ``proto-max-bulk-len``.

    Raises:
        ConfigurationError: If an argument is invalid.
    """

    kind = "redis"

    def __init__(
        self,
        name: str = "redis",
        *,
        connection: RedisConnection,
        serializer: str = "auto",
        secret: bytes | None = None,
        ttl: float | None = None,
        part_size: int = PART_BYTES,
    ) -> None:
        super().__init__(name, serializer=serializer, secret=secret, ttl=ttl)
        if type(part_size) is not int or not 0 < part_size <= PART_BYTES:
            raise ConfigurationError(
                f"part_size must be an int in 1..{PART_BYTES}, got {part_size!r}."
            )
        self.connection = connection
        self.part_size = part_size
        self._keys = connection.keys
        self._owns_connection = False

    @classmethod
    def from_config(cls, config: StoreConfig) -> RedisStore:
        """Connect to the Redis named in ``config`` and build the store.

        The config's URL has no credentials: when ``FRAMEWORK_REDIS_URL`` names the same
        deployment (host and port, socket path or a shared cluster node), its user name,
        password and TLS files are used.

        Args:
            config: Output of :meth:`config`, possibly from another process.

        Returns:
            A store that owns (and closes) its new connection.

        Raises:
            ConfigurationError: If the config has no usable URL (a store on an injected
                fakeredis client cannot be rebuilt) or an option is invalid.
        """
        options = _constructor_options(config)
        url = options.pop("url", None)
        prefix = options.pop("prefix", DEFAULT_PREFIX)
        if not isinstance(url, str):
            raise ConfigurationError(f"Redis store config {config.name!r} has no 'url' option.")
        try:
            settings = RedisSettings.from_url(url, prefix=prefix)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"Cannot rebuild Redis store {config.name!r} from its config: {exc}"
            ) from exc
        connection = RedisConnection(_with_local_credentials(settings))
        try:
            store = cls(config.name, connection=connection, **options)
        except (TypeError, ConfigurationError) as exc:
            connection.close()
            if isinstance(exc, ConfigurationError):
                raise
            msg = f"Redis store config {config.name!r} has options this version lacks: {exc}"
            raise ConfigurationError(msg) from exc
        store._owns_connection = True
        return store

    def _options(self) -> dict[str, Any]:
        return {
            "url": _public_url(self.connection),
            "prefix": self._keys.prefix,
            "part_size": self.part_size,
        }

    def _close(self) -> None:
        if self._owns_connection:
            self.connection.close()

    # -- writes --------------------------------------------------------------------------

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        px = None if ttl is None else max(1, round(ttl * 1000))
        writes: dict[str, Any] = {}
        keys = [self._lay_out(frame, readers, writes) for frame in frames]
        with self.connection.mapped_errors(f"store {len(frames)} object(s) in {self.name!r}"):
            if px is None and not self.connection.is_cluster:
                self.connection.client.mset(writes)
            else:
                # SET of a fresh key is idempotent, so the retrying client is safe here.
                pipe = self.connection.client.pipeline(transaction=False)
                for key, value in writes.items():
                    pipe.set(key, value, px=px)
                pipe.execute()
        return keys

    def _lay_out(self, frame: Segments, readers: int | None, writes: dict[str, Any]) -> str:
        """Add the values of one object to ``writes``; return its key."""
        if readers is None and frame.nbytes <= self.part_size:  # the common case, fast
            key = self._keys.obj(new_uid())
            writes[key] = self._wire(frame)
            return key
        oid = ObjectId.new(frame.nbytes, self.part_size, counted=readers is not None)
        if oid.parts == 1:
            key = self._keys.obj(str(oid))
            writes[key] = self._wire(frame)
        else:
            value_keys = self._value_keys(oid)
            parts = split_frame(frame, self.part_size)
            writes.update(zip(value_keys, map(self._wire, parts), strict=True))
            key = value_keys[0]
        if readers is not None:
            writes[self._keys.obj_readers(str(oid))] = readers
        return key

    def _wire(self, value: Segments) -> Any:
        """A value as sent: small ones joined (one packer item beats several), big ones as is."""
        if value.nbytes <= JOIN_BELOW:
            return value.join()
        return self.connection.bulk(value)

    # -- reads ---------------------------------------------------------------------------

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[BytesLike | None]:
        oids = [self._parse(key) for key in keys]
        results: list[BytesLike | None] = [None] * len(keys)
        with self.connection.mapped_errors(f"read {len(keys)} object(s) from {self.name!r}"):
            if not evict and not self.connection.is_cluster and all(map(_is_simple, oids)):
                # The common case in one MGET: a simple object's key is its only value key.
                return list(self.connection.client.mget(keys))
            found = [(i, oid) for i, oid in enumerate(oids) if oid is not None]
            simple = [(i, oid) for i, oid in found if _is_simple(oid)]
            if self.connection.is_cluster:
                self._read_cluster(found, simple, evict, results)
            elif found:
                self._run(found, evict, results, transaction=len(simple) < len(found))
        return results

    def _read_cluster(
        self,
        found: list[tuple[int, ObjectId]],
        simple: list[tuple[int, ObjectId]],
        evict: bool,
        results: list[BytesLike | None],
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
        results: list[BytesLike | None],
        *,
        transaction: bool,
    ) -> None:
        """Queue the reads of ``items`` in one pipeline, execute it, fill ``results``."""
        mutates = evict or any(oid.counted for _, oid in items)
        client = self.connection.once if mutates else self.connection.client
        pipe = client.pipeline(transaction=transaction)
        for _, oid in items:
            self._queue_read(pipe, oid, evict)
        replies = iter(pipe.execute())
        for i, oid in items:
            values = [next(replies) for _ in range(oid.parts)]
            if oid.counted:
                next(replies)  # the counter's reply: the values already tell presence
            if all(v is not None for v in values):
                results[i] = values[0] if oid.parts == 1 else join_parts(values)

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

    # -- single keys ---------------------------------------------------------------------

    def _exists(self, key: str) -> bool:
        oid = self._parse(key)
        if oid is None:
            return False
        with self.connection.mapped_errors(f"check object {key!r} in {self.name!r}"):
            return bool(self.connection.client.exists(self._keys.obj(str(oid))))

    def _delete(self, key: str) -> None:
        oid = self._parse(key)
        if oid is None:
            return
        doomed = self._value_keys(oid)
        if oid.counted:
            doomed.append(self._keys.obj_readers(str(oid)))
        with self.connection.mapped_errors(f"evict object {key!r} from {self.name!r}"):
            self.connection.client.delete(*doomed)

    def _parse(self, key: str) -> ObjectId | None:
        """The object id inside ``key``; ``None`` for keys this store never produces."""
        try:
            oid = self._keys.oid_of(key)
        except (ConfigurationError, AttributeError, TypeError):  # not a str key of ours
            return None
        return ObjectId.parse(oid)

    def _value_keys(self, oid: ObjectId) -> list[str]:
        text = str(oid)
        return [self._keys.obj(text)] + [self._keys.obj_part(text, n) for n in range(1, oid.parts)]


def _is_simple(oid: ObjectId | None) -> bool:
    """Whether ``oid`` is one plain value: neither split nor counted."""
    return oid is not None and oid.parts == 1 and not oid.counted


def _public_url(connection: RedisConnection) -> str:
    """The connection's URL without user name, password, TLS files or prefix."""
    settings, described = connection.settings, connection.url()
    if described != settings.url():
        # An injected client: its settings are defaults, its description is the truth.
        try:
            settings = RedisSettings.from_url(described)
        except ConfigurationError:
            return described  # no URL form (e.g. "fakeredis://"): cannot be rebuilt
    blank = dict.fromkeys(_SECRET_FIELDS)
    return settings.model_copy(update={**blank, "prefix": DEFAULT_PREFIX}).url()


def _with_local_credentials(settings: RedisSettings) -> RedisSettings:
    """Add credentials from ``FRAMEWORK_REDIS_URL`` when it names the same deployment."""
    local = RedisSettings.from_env()
    if local is None or not _same_deployment(local, settings):
        return settings
    return settings.model_copy(update={name: getattr(local, name) for name in _SECRET_FIELDS})


def _same_deployment(a: RedisSettings, b: RedisSettings) -> bool:
    if a.cluster != b.cluster or a.ssl != b.ssl:
        return False
    if a.unix_socket_path is not None or b.unix_socket_path is not None:
        return a.unix_socket_path == b.unix_socket_path
    if a.cluster:
        return bool(set(a.startup_nodes) & set(b.startup_nodes))
    return (a.host, a.port) == (b.host, b.port)

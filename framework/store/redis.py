"""``RedisStore``: objects as Redis string values, cluster-safe, batched, evict-on-read.

Layout (see :mod:`framework.store.layout`): one object is ``fw:obj:{<oid>}``, plus
``fw:obj:{<oid>}:<n>`` parts when its frame exceeds ``part_size`` and a
``fw:obj:{<oid>}:readers`` counter for ``readers=N``; one hash tag per object, so every
per-object multi-key command and transaction stays in one cluster slot.

An unsigned store with the ``auto`` or ``raw`` serializer keeps an exact ``bytes``
object unframed (``-b`` in its id): the value is the object, written and read back
with no copy. Signed stores frame everything, so the MAC covers every value.

Round trips: ``put_batch`` is one ``SET`` (one value), one ``MSET`` (standalone, no
TTL) or one pipeline of ``SET ... PX``; :meth:`RedisStore.stage_batch` returns those
writes unsent, for a caller's own pipeline. ``get_batch`` is one ``GET``/``GETDEL``
(one simple object), one ``MGET`` or one pipeline. On a cluster, objects
that need a transaction (split or counted ones) take one extra round trip each,
because a transaction cannot span slots.

Atomicity: ``evict=True`` reads with ``GETDEL`` (inside ``MULTI`` for split objects),
so two concurrent readers never both get an object. A counted read is
``MULTI; GET...; EVAL <decrement, delete at zero>; EXEC``: the value never passes
through Lua (no copy), and the N-th read deletes every key of the object in the same
atomic step. The reads are :mod:`framework.store._redis_reads`; single-key commands
(exists, evict, expire) are :mod:`framework.store._redis_keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from framework.buffers import Segments
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.framing import sign_frame
from framework.keys import DEFAULT_PREFIX
from framework.serialize import DEFAULT_SERIALIZER
from framework.serialize import Serializer as FrameSerializer
from framework.settings import RedisSettings
from framework.store._custom import custom_bytes
from framework.store._options import constructor_options
from framework.store._redis_keys import RedisKeyMethods, count_keys
from framework.store._redis_reads import RedisReadMethods
from framework.store._redis_urls import public_url, with_local_credentials
from framework.store.base import BaseStore
from framework.store.config import StoreConfig
from framework.store.connector import RedisConnector
from framework.store.layout import (
    PART_BYTES,
    Encoded,
    ObjectId,
    StagedBatch,
    new_uid,
    split_frame,
)
from framework.store.registry import register_store_kind

__all__ = ["RedisStore", "StagedBatch"]

#: Values up to this size are joined into one ``bytes`` before sending: for small values
#: one packer item is cheaper than several views (measured: 1 KB batches ~2x faster).
JOIN_BELOW = 64 * 1024


class RedisStore(RedisKeyMethods, RedisReadMethods, BaseStore):
    """Object store on Redis (standalone or cluster) with the framework's key schema.

    Built either the project's way, ``RedisStore(name, connection=conn)``, or
    ProxyStore's way, ``Store(name, RedisConnector(hostname, port))`` (equivalently
    ``RedisStore(name, RedisConnector(...))``), in which case the store owns the
    connection the connector opens.

    Args:
        name: Name of the store (its registry name).
        connector: ProxyStore's connector form: a :class:`RedisConnector`.
        connection: Where to store objects; not closed by the store unless the store
            built it (from a connector or :meth:`from_config`).
        part_size: Largest Redis value written; bigger objects are split into parts.
            Defaults to just under Redis's 512 MiB ``proto-max-bulk-len``.
        options: :class:`Store`'s keyword arguments: ``serializer``,
            ``deserializer``, ``secret`` (HMAC key: objects are signed and verified),
            ``ttl`` (default lifetime in seconds, ``PX``), ``register``,
            ``populate_target``, ``cache_size``, ``metrics``.

    Raises:
        ConfigurationError: If an argument is invalid, or neither (or both of)
            ``connector`` and ``connection`` is given.
        StoreExistsError: If ``register`` and the name is taken.
    """

    kind = "redis"

    def __init__(
        self,
        name: str = "redis",
        connector: RedisConnector | None = None,
        *,
        connection: RedisConnection | None = None,
        part_size: int = PART_BYTES,
        **options: Any,
    ) -> None:
        if type(part_size) is not int or not 0 < part_size <= PART_BYTES:
            raise ConfigurationError(
                f"part_size must be an int in 1..{PART_BYTES}, got {part_size!r}."
            )
        self.connection, self._owns_connection = _connection_of(connector, connection)
        self._clear = connector is not None and connector.clear
        self.part_size = part_size
        self._keys = self.connection.keys
        try:
            super().__init__(name, **options)
        except BaseException:
            if self._owns_connection:
                self.connection.close()
            raise
        # Exact bytes are stored unframed (no copy either way) where no MAC must cover them.
        self._raw_bytes = not self._signed and self._serializer_name in ("auto", "raw", "custom")

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
        options = constructor_options(config)
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
        local, elsewhere = with_local_credentials(settings)
        connection = RedisConnection(local)
        if local.password is None:
            have = f" (it names {elsewhere}, not this one)" if elsewhere is not None else ""
            connection.auth_hint = (
                f"store {config.name!r} was rebuilt from its config, which never carries "
                "credentials. Give this process a FRAMEWORK_REDIS_URL naming this deployment "
                f"with them{have}, or register_store() a store built with them under that "
                "name."
            )
        try:
            store = cls(config.name, connection=connection, **options)
        except BaseException as exc:
            connection.close()
            if not isinstance(exc, TypeError):
                raise
            msg = f"Redis store config {config.name!r} has options this version lacks: {exc}"
            raise ConfigurationError(msg) from exc
        store._owns_connection = True
        return store

    def _options(self) -> dict[str, Any]:
        return {
            "url": public_url(self.connection),
            "prefix": self._keys.prefix,
            "part_size": self.part_size,
        }

    def _close(self) -> None:
        try:
            if self._clear:
                self._clear_objects()
        finally:
            if self._owns_connection:
                self.connection.close()

    # -- writes --------------------------------------------------------------------------

    def stage_batch(
        self, objs: Sequence[Any], *, ttl: float | None = None, readers: int | None = None
    ) -> StagedBatch:
        """Serialize ``objs`` and return the writes :meth:`put_batch` would send, unsent.

        For callers that send the writes in a round trip of their own, e.g. the stream
        layer's pipeline that also publishes the keys. Once every write is sent (on this
        store's Redis), the objects are stored exactly as :meth:`put_batch` stores them.

        Args:
            objs: The objects.
            ttl: Lifetime in seconds; ``None`` uses the store's default ``ttl``.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            The keys, the ``SET`` writes and their lifetime.

        Raises:
            ConfigurationError: If ``ttl`` or ``readers`` is invalid.
            SerializationError: If an object cannot be serialized.
            ClosedError: If the store is closed.
        """
        ttl = self._checked_put(ttl, readers)
        # Through encode(): the store's custom serializer applies, as in put_batch.
        return self._stage(map(self.encode, objs), ttl, readers)

    def stage_encoded(
        self, values: Sequence[Encoded], *, ttl: float | None = None, readers: int | None = None
    ) -> StagedBatch:
        """The writes that store objects serialized by :meth:`encode`, unsent.

        :meth:`stage_batch` for objects serialized beforehand (see :meth:`encode`).

        Args:
            values: This store's :meth:`encode` output, one per object.
            ttl: Lifetime in seconds; ``None`` uses the store's default ``ttl``.
            readers: Delete each object atomically after this many reads (fan-out).

        Returns:
            The keys, the ``SET`` writes and their lifetime.

        Raises:
            ConfigurationError: If ``ttl`` or ``readers`` is invalid.
            ClosedError: If the store is closed.
        """
        ttl = self._checked_put(ttl, readers)
        return self._stage(values, ttl, readers)

    def encode(self, obj: Any) -> Encoded:
        """Serialize ``obj`` as :meth:`put_batch` would (see :meth:`Store.encode`).

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
            TypeError: If a custom serializer function returns something other than bytes.
        """
        return self._encode(obj if self.serializer is None else custom_bytes(self.serializer, obj))

    def encode_serialized(
        self, obj: Any, frame: Segments, serializer: FrameSerializer | None = None
    ) -> Encoded:
        """:meth:`encode`, reusing ``frame`` when this store would serialize ``obj`` alike.

        Alike means: no custom ``serializer`` function, ``obj`` not kept raw, and the
        same serializer as the one that made ``frame``. The frame is then stored as it is,
        or signed (:func:`~framework.framing.sign_frame`, no copy of its parts) when the
        store has a secret: the bytes :meth:`encode` would make, for a fraction of the
        cost (a 36 MB pickled list: once instead of twice).
        """
        alike = (
            self.serializer is None
            and not (type(obj) is bytes and self._raw_bytes)
            and (serializer or DEFAULT_SERIALIZER) is self._codec.serializer
        )
        if not alike:
            return self.encode(obj)
        if self._codec.secret is None:
            return Encoded(frame, False)
        uid = new_uid()  # signed for the object it will be stored as
        secret = self._codec.object_secret(uid)
        signed = None if secret is None else sign_frame(frame, secret)
        return self.encode(obj) if signed is None else Encoded(signed, False, uid)

    def _write_encoded(
        self, values: Sequence[Encoded], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        return self._send(self._stage(values, ttl, readers))

    def _put_objects(
        self, objs: Sequence[Any], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        return self._send(self._stage(map(self._encode, objs), ttl, readers))

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        return self._send(self._stage((Encoded(frame, False) for frame in frames), ttl, readers))

    def _encode(self, obj: Any) -> Encoded:
        """``obj`` as a stored value, and whether that is ``obj`` itself (raw, unframed)."""
        if type(obj) is bytes and self._raw_bytes:
            return Encoded(obj, True)
        uid = new_uid() if self._signed else None  # signed for the object it will be stored as
        return Encoded(self._codec.encode(obj, uid), False, uid)

    def _stage(
        self,
        values: Iterable[Encoded],
        ttl: float | None,
        readers: int | None,
    ) -> StagedBatch:
        writes: dict[str, Any] = {}
        keys = [self._lay_out(value, readers, writes) for value in values]
        px = None if ttl is None else max(1, round(ttl * 1000))
        return StagedBatch(keys, list(writes.items()), px)

    def _send(self, staged: StagedBatch) -> list[str]:
        """Send a staged batch: one ``SET`` or ``MSET``, or one pipeline of ``SET ... PX``."""
        writes, px = staged.writes, staged.px
        what = f"store {count_keys(staged.keys)} in {self.name!r}"
        with self.connection.mapped_errors(what):
            # SET of a fresh key is idempotent, so the retrying client is safe here.
            if len(writes) == 1:
                self.connection.client.set(*writes[0], px=px)
            elif px is None and not self.connection.is_cluster:
                self.connection.client.mset(dict(writes))
            else:
                pipe = self.connection.client.pipeline(transaction=False)
                for key, value in writes:
                    pipe.set(key, value, px=px)
                pipe.execute()
        return staged.keys

    def _lay_out(self, encoded: Encoded, readers: int | None, writes: dict[str, Any]) -> str:
        """Add the values of one object to ``writes``; return its key."""
        value, raw, uid = encoded
        nbytes = len(value) if isinstance(value, bytes) else value.nbytes
        if readers is None and nbytes <= self.part_size:  # the common case, fast
            uid = uid or new_uid()
            key = self._keys.obj(str(ObjectId(uid, raw=True)) if raw else uid)
            writes[key] = value if isinstance(value, bytes) else self._wire(value)
            return key
        frame = Segments([value]) if isinstance(value, bytes) else value
        oid = ObjectId.new(nbytes, self.part_size, counted=readers is not None, raw=raw, uid=uid)
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


def _connection_of(
    connector: RedisConnector | None, connection: RedisConnection | None
) -> tuple[RedisConnection, bool]:
    """The store's connection and whether the store owns it (one built from the connector)."""
    if connector is not None and connection is None:
        return connector.connect(), True
    if connector is not None or connection is None:
        raise ConfigurationError(
            "A Redis store needs either connection= or a RedisConnector, and not both."
        )
    return connection, False


register_store_kind("redis", RedisStore, exist_ok=True)
RedisConnector.store_type = RedisStore

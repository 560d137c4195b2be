"""The single-key methods of :class:`~framework.store.RedisStore` (a mixin).

Existence, deletion, TTL changes (leases) and clearing, by object key; each object's
keys share one hash tag, so every command here stays in one cluster slot. Also how
error messages name the keys of a batch (:func:`count_keys`).
"""

from __future__ import annotations

from collections.abc import Sequence

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.keys import KeySchema
from framework.store.layout import ObjectId

__all__ = ["RedisKeyMethods", "count_keys"]


class RedisKeyMethods:
    """Methods of a Redis store that work on the keys of single objects."""

    connection: RedisConnection
    name: str
    _keys: KeySchema

    def _exists(self, key: str) -> bool:
        oid = self._parse(key)
        if oid is None:
            return False
        with self.connection.mapped_errors(f"check object {key!r} in {self.name!r}"):
            return bool(self.connection.client.exists(self._keys.obj(str(oid))))

    def _delete(self, key: str) -> None:
        doomed = self._doomed(key)
        if not doomed:
            return
        with self.connection.mapped_errors(f"evict object {key!r} from {self.name!r}"):
            self.connection.client.delete(*doomed)

    def _doomed(self, key: str) -> list[str]:
        """Every Redis key of ``key``'s object (none for keys this store never produces)."""
        oid = self._parse(key)
        if oid is None:
            return []
        doomed = self._value_keys(oid)
        if oid.counted:
            doomed.append(self._keys.obj_readers(str(oid)))
        return doomed

    def _delete_batch(self, keys: Sequence[str]) -> None:
        doomed = [name for key in keys for name in self._doomed(key)]
        if not doomed:
            return
        with self.connection.mapped_errors(f"evict {len(keys)} objects from {self.name!r}"):
            if not self.connection.is_cluster:
                # UNLINK frees large values in the background: the reader goes on at once.
                self.connection.client.unlink(*doomed)
                return
            pipe = self.connection.client.pipeline(transaction=False)
            for key in doomed:  # objects live in different slots
                pipe.unlink(key)
            pipe.execute()

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

    def _clear_objects(self) -> None:
        """Delete every object under the store's key prefix (``RedisConnector(clear=True)``).

        ProxyStore's connector runs ``FLUSHDB``; this deletes only object keys.
        """
        pattern = f"{self._keys.prefix}:obj:*"
        with self.connection.mapped_errors(f"clear the objects of {self.name!r}"):
            doomed = list(self.connection.client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(doomed), 500):
                for key in doomed[start : start + 500]:  # one slot per key: cluster-safe
                    self.connection.client.delete(key)

    def _expire(self, keys: Sequence[str], ttl: float) -> None:
        px = max(1, round(ttl * 1000))
        with self.connection.mapped_errors(
            f"set the TTL of {len(keys)} object(s) in {self.name!r}"
        ):
            pipe = self.connection.client.pipeline(transaction=False)
            for key in keys:
                oid = self._parse(key)
                if oid is None:
                    continue
                doomed = self._value_keys(oid)
                if oid.counted:
                    doomed.append(self._keys.obj_readers(str(oid)))
                for value_key in doomed:
                    pipe.pexpire(value_key, px)
            pipe.execute()


def count_keys(keys: Sequence[str]) -> str:
    """``"1 object(s) ('fw:obj:{a}')"``: error messages name a key (ACL denials need it)."""
    first = f"{keys[0]!r}" if keys else "none"
    more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
    return f"{len(keys)} object(s) ({first}{more})"

"""One live receiving cell per name: a short lease in Redis, refreshed by its inbox reader.

Two live cells with the same name would share one inbox consumer group and split the
transfers between them, and two object-protocol engines on them would split the objects
of a session. So a cell takes the lease ``fw:cell:{<name>}:receiver`` when it starts
receiving (its first ``register_*`` call) and its inbox reader refreshes it. A cell that
finds the lease held waits until it expires: a predecessor that was killed holds it for
at most :data:`LEASE_S` seconds; one that is alive keeps refreshing it, and the new
cell's registration fails naming the holder.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from framework.cell.config import LEASE_S
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError

__all__ = ["LEASE_S", "ReceiverLease"]

logger = logging.getLogger(__name__)

#: Seconds between refreshes.
REFRESH_S = LEASE_S / 3

# KEYS[1] lease; ARGV: token, ttl ms. 1: held by token (refreshed or taken again after
# it lapsed, e.g. Redis restarted); 0: someone else holds it; 2: taken from a key no cell
# wrote (another type, or a value without a TTL, which would hold the name forever).
# Only commands of the README's fw-cell ACL rules: GET fails on another type, and
# PEXPIRE NX succeeds only on a key without a TTL.
_REFRESH = """
local holder = redis.pcall('GET', KEYS[1])
local foreign = type(holder) == 'table' and holder['err'] ~= nil
if not foreign and holder and holder ~= ARGV[1] then
  foreign = redis.call('PEXPIRE', KEYS[1], ARGV[2], 'NX') == 1
end
if foreign then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV[1] token. Deletes the lease only if it is still this holder's.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ReceiverLease:
    """The lease of one receiving cell.

    Args:
        conn: The connection.
        cell: The cell's name.
    """

    def __init__(self, conn: RedisConnection, cell: str) -> None:
        self.conn = conn
        self.cell = cell
        self.key = conn.keys.receiver(cell)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._ttl_ms = round(LEASE_S * 1000)
        self._refreshed = 0.0
        self._lost_to: str | None = None

    def acquire(self) -> None:
        """Take the lease, waiting up to :data:`LEASE_S` (plus a margin) for it to lapse.

        Raises:
            ConfigurationError: If another live cell with this name keeps it.
            BackendError: If Redis fails.
        """
        deadline = time.monotonic() + LEASE_S + 1.0
        while not self._take():
            if time.monotonic() >= deadline:
                raise ConfigurationError(
                    f"Another cell named {self.cell!r} is receiving ({self._holder()}); "
                    "the names of live cells must be unique."
                )
            time.sleep(0.1)

    def refresh(self) -> bool:
        """Refresh the lease (at most every :data:`REFRESH_S`); logs once if it was taken.

        Returns:
            Whether this cell holds the lease. A cell that does not must take no new
            transfers: another live cell receives under its name (it took the name
            while this one was out of touch with Redis, frozen, say), and the two would
            split the transfers between them.

        Raises:
            BackendError: If Redis fails.
        """
        if time.monotonic() - self._refreshed < REFRESH_S:
            return self._lost_to is None
        if self._take():
            if self._lost_to is not None:
                logger.warning("Cell %r has its receiving lease back.", self.cell)
            self._lost_to = None
            return True
        holder = self._holder()
        if holder != self._lost_to:
            self._lost_to = holder
            logger.error(
                "Cell %r lost its receiving lease to %s (another cell took the name while "
                "this one was out of touch with Redis for over %.0f s): it takes no new "
                "transfers until the name is free again.",
                self.cell,
                holder,
                LEASE_S,
            )
        self._refreshed = time.monotonic()
        return False

    @property
    def lost_to(self) -> str | None:
        """Who holds the name since another cell took it (None while this cell holds it)."""
        return self._lost_to

    def release(self) -> None:
        """Give the lease up if this cell still holds it (idempotent)."""
        with self.conn.mapped_errors(f"release lease {self.key!r}", command="EVAL"):
            self.conn.client.eval(_RELEASE, 1, self.key, self.token)

    def _take(self) -> bool:
        with self.conn.mapped_errors(f"take lease {self.key!r}", command="EVAL"):
            taken = int(self.conn.client.eval(_REFRESH, 1, self.key, self.token, self._ttl_ms))
        if taken == 2:
            logger.warning(
                "Cell %r replaced its lease key %s, which held something no cell writes "
                "(another type, or a value without a TTL).",
                self.cell,
                self.key,
            )
        if taken:
            self._refreshed = time.monotonic()
        return bool(taken)

    def _holder(self) -> str:
        with self.conn.mapped_errors(f"read lease {self.key!r}", command="GET"):
            raw = self.conn.client.get(self.key)
        return "nobody" if raw is None else raw.decode(errors="replace")

"""Whether the Redis server restarted, and lost what it held, since a subscriber last looked.

redis-py reconnects on its own, so a subscriber does not see a restart as an error. A
restart without an append-only file empties the server: a list topic's messages, a
durable topic's entries and its consumer groups, and the producers hashes that tell
subscribers when a topic ended. The server's ``run_id`` (``INFO server``) changes with
each start; :class:`ServerRun` remembers the last one seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.connection import RedisConnection
from framework.exceptions import BackendError

__all__ = ["ServerRun"]

#: The ``INFO`` sections that hold the run id and whether an append-only file is kept.
SECTIONS = ("server", "persistence")


class ServerRun:
    """The run id of a subscriber's Redis, to tell a restart that lost data.

    On a cluster, the run of the node that holds ``key`` (each node has its own): a
    restart of that node is told by its address, so a slot moved to another node, or
    a replica promoted, is not taken for one. Not served on a cluster without a key,
    or without the ``INFO`` permission: there, :meth:`observe` never reports a restart.

    Args:
        connection: The subscriber's connection; its run id is read now.
        key: The key whose node to follow on a cluster (a list topic's list).
    """

    def __init__(self, connection: RedisConnection, key: str | None = None) -> None:
        self._conn = connection
        self._key = key
        self._run: tuple[str, bool] | None = None
        #: Run id and append-only flag last seen at each node (by address; "" standalone).
        self._runs: dict[str, tuple[str, bool]] = {}
        #: Run ids whose restart the subscriber has reported (reported once each).
        self.reported: set[str] = set()
        self.observe(self.read())

    @property
    def served(self) -> bool:
        """Whether run ids can be read here (on a cluster, only for a key's node)."""
        return not self._conn.is_cluster or self._key is not None

    @property
    def current(self) -> str | None:
        """The run id seen last, if any."""
        return None if self._run is None else self._run[0]

    def read(self) -> Mapping[str, Any] | None:
        """The server's ``INFO`` sections, or None if it cannot tell (or is unreachable).

        On a cluster, the reply carries the node's address under ``"node"``.
        """
        if not self.served:
            return None
        try:
            with self._conn.mapped_errors("read the server's run id", command="INFO"):
                if not self._conn.is_cluster:
                    info: Mapping[str, Any] = self._conn.once.info(*SECTIONS)  # one round trip
                    return info
                client = self._conn.once
                node = client.get_node_from_key(self._key)
                reply = client.info(*SECTIONS, target_nodes=node)
        except BackendError:
            return None
        return {**reply, "node": node.name} if isinstance(reply, Mapping) else None

    def observe(self, info: Mapping[str, Any] | None) -> bool:
        """Note what ``INFO`` said; True if the server restarted without an append-only file.

        Args:
            info: The ``INFO`` reply of :data:`SECTIONS` (None: nothing learnt).
        """
        if info is None or not info.get("run_id"):
            return False
        run = str(info["run_id"]), int(info.get("aof_enabled", 0)) == 1
        node = str(info.get("node", ""))
        before = self._runs.get(node)
        self._run = self._runs[node] = run
        return before is not None and run[0] != before[0] and not run[1]

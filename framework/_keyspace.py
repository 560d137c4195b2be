"""Walking the keyspace: ``SCAN`` on a server, or on every primary of a cluster.

Used by the demo (to delete the keys of one run) and by ``framework inspect``; both
only ever touch keys under the framework's prefix.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from framework.connection import RedisConnection

__all__ = ["delete_keys", "primaries", "scan_keys"]

#: Keys asked for per SCAN call, and deleted per UNLINK.
BATCH = 500


def primaries(conn: RedisConnection) -> list[Any]:
    """The nodes to scan: every primary of a cluster, or ``[None]`` for one server."""
    if conn.is_cluster:
        with conn.mapped_errors("list the cluster's primaries", command="CLUSTER SLOTS"):
            return list(conn.client.get_primaries())
    return [None]


def scan_keys(conn: RedisConnection, pattern: str, node: Any = None) -> Iterator[bytes]:
    """Every key matching ``pattern`` (on ``node`` of a cluster; see :func:`primaries`).

    Raises:
        BackendError: If Redis fails (mapped, naming the pattern).
    """
    extra = {} if node is None else {"target_nodes": node}
    with conn.mapped_errors(f"scan keys matching {pattern!r}", command="SCAN"):
        yield from conn.client.scan_iter(match=pattern, count=BATCH, **extra)


def delete_keys(conn: RedisConnection, pattern: str) -> int:
    """Delete every key matching ``pattern`` on every primary; returns how many went.

    Raises:
        BackendError: If Redis fails (mapped, naming the pattern).
    """
    deleted = 0
    for node in primaries(conn):
        keys = scan_keys(conn, pattern, node)
        while batch := list(islice(keys, BATCH)):
            # redis-py splits a multi-key UNLINK by slot on a cluster.
            with conn.mapped_errors(f"delete keys matching {pattern!r}", command="UNLINK"):
                deleted += int(conn.client.unlink(*batch))
    return deleted

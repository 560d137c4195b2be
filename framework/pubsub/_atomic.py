"""Run a batch's store writes and the publish that names them as one step.

Standalone Redis: ``MULTI``, the writes, the publish commands, ``EXEC``, sent in one
round trip. A write that Redis refuses while queueing (``-OOM`` under ``maxmemory``
with ``noeviction``) aborts the whole transaction, so the event is never published
without its objects. On a cluster the writes live in other slots than the topic,
so they go first in a checked pipeline and the publish commands (one slot) follow
only if every write succeeded.

Callers wrap the call in ``mapped_errors``: redis exceptions leave this module raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from framework._raw import PinnedConnection, round_trip
from framework.connection import RedisConnection

__all__ = ["run_atomic"]

Command = tuple[Any, ...]


def run_atomic(
    conn: RedisConnection,
    writes: Sequence[Command],
    tail: Sequence[Command],
    *,
    atomic: bool = True,
    pinned: PinnedConnection | None = None,
) -> list[Any]:
    """Run ``writes`` then ``tail``; ``tail`` runs only if every write succeeded.

    Never retries (the ``once`` client): a caller resends, which is safe because the
    writes are idempotent and consumers drop duplicate messages.

    Args:
        conn: The connection.
        writes: Store writes (``SET ... PX``), possibly in other slots than ``tail``.
        tail: The publish commands, all in one slot.
        atomic: Whether ``tail`` must run as a whole (``MULTI``); without writes and
            with ``atomic=False``, the commands just share one round trip.
        pinned: The caller's own connection to ``conn.once``'s server, used instead of
            one from the pool (a publisher's, saving the pool's cost per message).

    Returns:
        The replies of ``tail``.

    Raises:
        redis.exceptions.RedisError: The first refused command, or a connection error.
    """
    client = conn.once
    trip = round_trip if pinned is None else lambda _, commands: pinned.round_trip(commands)
    if not writes and not atomic:
        replies = trip(client, tail)
        return _checked(_one_by_one(client, tail) if replies is None else replies)
    if conn.is_cluster:
        if writes:
            pipe = client.pipeline(transaction=False)
            for command in writes:
                pipe.execute_command(*command)
            pipe.execute()  # raises the first failed write: nothing is published then
        return _transaction(client, tail)
    replies = trip(client, [("MULTI",), *writes, *tail, ("EXEC",)])
    results = _transaction(client, [*writes, *tail]) if replies is None else replies[-1]
    return _checked(results)[len(writes) :]


def _one_by_one(client: Any, commands: Sequence[Command]) -> list[Any]:
    return [client.execute_command(*command) for command in commands]


def _transaction(client: Any, commands: Sequence[Command]) -> list[Any]:
    if len(commands) == 1:
        return [client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=True)
    for command in commands:
        pipe.execute_command(*command)
    return _checked(pipe.execute())


def _checked(results: Any) -> list[Any]:
    """The replies of an ``EXEC``; raise the first error inside it."""
    if results is None:
        raise ResponseError("The transaction was aborted.")
    for result in results:
        if isinstance(result, Exception):
            raise result
    return list(results)

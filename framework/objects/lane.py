"""A reading thread's own Redis connection: one round trip without pool or pipeline.

A mailbox reader makes one round trip per message: its replies or object, upkeep, then
``XREAD``/``XREADGROUP BLOCK``. Through a redis-py pipeline that costs a pool checkout
and release (a lock, a ``poll`` and metrics each), a retry wrapper, per-command argument
handling and reply callbacks: tens of microseconds of Python, per message, on each side.
A :class:`Lane` keeps one connection of the blocking pool for as long as its reader lives,
packs its commands with the connection's own packer (zero-copy for large values) and
reads the raw replies with the connection's own parser (hiredis). A dropped connection is
disconnected, so the next round trip connects afresh. On a cluster, whose client routes
each command by key, the commands go through a redis-py pipeline instead.

Redis exceptions raised here are redis-py's own: callers map them with
``conn.mapped_errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from framework.connection import RedisConnection

__all__ = ["Command", "Lane", "fields_of"]

#: A Redis command and its arguments, e.g. ``("XDEL", key, eid)``.
Command = tuple[Any, ...]
#: Sent before a command whose reply is not wanted.
_SKIP: Command = ("CLIENT", "REPLY", "SKIP")


class Lane:
    """Round trips on one connection that only its owner uses, one thread at a time.

    Args:
        conn: The connection whose blocking pool lends the connection.
    """

    def __init__(self, conn: RedisConnection) -> None:
        self._conn = conn
        self._held: tuple[Any, Any] | None = None  # (pool, connection)

    def round_trip(self, commands: Sequence[Command], quiet: Sequence[Command] = ()) -> list[Any]:
        """Send ``quiet`` then ``commands`` in one write; read one reply per command.

        Redis is told not to answer the ``quiet`` commands (``CLIENT REPLY SKIP`` before
        each): no reply arrives before the last command's, so a reader blocked in an
        ``XREAD BLOCK`` is not woken just to read them. Their errors go unreported too.

        Returns:
            The raw replies to ``commands``, in order (RESP2 or RESP3 shapes, as the
            connection speaks).

        Raises:
            redis.exceptions.ResponseError: The first command Redis answered with an error
                (after every reply was read, so the connection stays usable).
            redis.exceptions.ConnectionError: The connection dropped (it is disconnected).
            redis.exceptions.TimeoutError: Redis did not answer within the socket timeout.
            ClosedError: The connection was closed.
        """
        client = self._conn.blocking  # raises ClosedError once the connection is closed
        if self._conn.is_cluster:
            replies = _pipelined(client, quiet, commands)
        else:
            replies = self._exchange(client, quiet, commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                raise reply
        return replies

    def _exchange(
        self, client: Any, quiet: Sequence[Command], commands: Sequence[Command]
    ) -> list[Any]:
        if self._held is None:
            pool = client.connection_pool
            self._held = (pool, pool.get_connection())
        connection = self._held[1]
        sent = [c for command in quiet for c in (_SKIP, command)]
        try:
            connection.send_packed_command(connection.pack_commands([*sent, *commands]))
            return [_reply(connection) for _ in commands]
        except BaseException:
            connection.disconnect()  # a reply may be half read: start afresh next time
            raise

    def close(self) -> None:
        """Give the connection back to its pool; idempotent."""
        held, self._held = self._held, None
        if held is not None:
            pool, connection = held
            pool.release(connection)


def _reply(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as exc:  # Redis answered with an error: the reply is complete
        return exc


def _pipelined(client: Any, quiet: Sequence[Command], commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in (*quiet, *commands):
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))[len(quiet) :]  # quiet ones: unreported


def fields_of(raw: Any) -> dict[bytes, Any]:
    """An entry's fields as a dict, from a flat ``[field, value, ...]`` list, a dict or nil."""
    if raw is None:
        return {}  # a pending entry that was deleted: XREADGROUP gives it no fields
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=False))

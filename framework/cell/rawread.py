"""A transfer's round trips straight on the socket: commands out, an XREAD reply in.

redis-py 8 spends about half a millisecond per command on instrumentation, and its
pipeline and pool cost tens of microseconds more; the receive path makes a round trip
per chunk or two, so :func:`round_trip` sends its commands (an optional piggybacked
ack, then ``XREAD``) itself and parses the replies with
:class:`~framework.cell.respreader.RespReader`, which copies each chunk body once,
into its destination. A receiver keeps its connection for the whole transfer
(:class:`ReadSession`).

Only a plain ``redis.Redis`` over a socket is served; for other clients (cluster,
fakeredis) it returns None and the caller uses redis-py. Redis exceptions raised here
are redis-py's own, so the caller maps them as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from framework._raw import PinnedConnection, send_all
from framework.cell.respreader import Place, RespReader
from framework.redis_streams import fields_of
from framework.wire import pack_small

__all__ = ["ReadSession", "exchange", "round_trip"]


def round_trip(
    client: Any,
    commands: Sequence[tuple[Any, ...]],
    place: Place | None = None,
    session: ReadSession | None = None,
) -> list[Any] | None:
    """Run ``commands`` (the last one an ``XREAD``) in one round trip.

    Args:
        client: The blocking client; only a plain ``redis.Redis`` is served.
        commands: Argument tuples; the last must be ``XREAD ... STREAMS ...``.
        place: Chooses the destination of each chunk body (field ``d``).
        session: A connection kept by the caller (see :class:`ReadSession`); without
            one, a connection of the pool is used.

    Returns:
        The replies (errors as redis-py ``ResponseError`` objects); the ``XREAD`` reply as a list
        of ``(key, [(entry_id, [field, value, ...]), ...])``, each value of a field ``d`` as
        :class:`Checked`. None if not served.

    Raises:
        redis.exceptions.ConnectionError: The connection dropped (it is discarded).
        redis.exceptions.TimeoutError: Redis did not answer within the socket timeout.
    """
    if type(client) is not redis.Redis:
        return None
    if session is not None:
        return session.round_trip(commands, place)
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        if getattr(connection, "_sock", None) is None:
            return None
        return _exchange(connection, _reader_for(connection), commands, place)
    finally:
        pool.release(connection)


class ReadSession:
    """One receiver's connection, kept from one round trip to the next.

    A transfer's receiver makes one round trip per chunk or two; taking a connection
    from redis-py 8's pool and giving it back (locks, a readiness ``poll``,
    instrumentation) costs ~10 us each time. The connection is one of ``client``'s
    pool (see :class:`~framework._raw.PinnedConnection`: a connection the server closed
    while it was idle is replaced, a thread that finds it busy uses the pool).
    :meth:`close` gives it back; it is idempotent.

    Args:
        client: The blocking client the transfer reads with.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._pinned = PinnedConnection(client)

    def round_trip(
        self, commands: Sequence[tuple[Any, ...]], place: Place | None = None
    ) -> list[Any] | None:
        """:func:`round_trip` on the kept connection."""
        connection = self._pinned.acquire()
        if connection is None:
            return round_trip(self._client, commands, place)
        try:
            if connection._sock is None:
                connection.connect()  # dropped by an earlier failure: start afresh
            # A fresh read buffer per round trip: keeping one made a single receiver's
            # CPU jump from 0.055 s to 0.075-0.095 s per 256 MB in about half of the
            # processes (0 of 8 with a fresh one).
            return _exchange(connection, _reader_for(connection), commands, place)
        finally:
            self._pinned.release()

    def close(self) -> None:
        """Give the connection back to the pool (idempotent)."""
        self._pinned.close()


def _reader_for(connection: Any) -> RespReader:
    return RespReader(connection._sock, whole=getattr(connection, "loopback", False))


def _exchange(
    connection: Any, reader: RespReader, commands: Sequence[tuple[Any, ...]], place: Place | None
) -> list[Any]:
    try:
        packed = pack_small(connection, commands)
        if packed is None:  # a chunk body (the sender's writes): sent without a copy
            connection.send_packed_command(connection.pack_commands(commands))
        else:
            send_all(connection._sock, packed)
        replies = [reader.value() for _ in commands[:-1]]
        replies.append(reader.xread(place))
        if reader.pending():  # never expected: do not keep a connection in doubt
            connection.disconnect()
    except BaseException:
        connection.disconnect()  # a reply may be half read: never reuse it
        raise
    return replies


def exchange(
    client: Any,
    commands: list[tuple[Any, ...]],
    xread: tuple[Any, ...],
    place: Place | None = None,
    session: ReadSession | None = None,
) -> tuple[list[Any], Any]:
    """Run ``commands`` then ``xread`` in one round trip.

    Straight from the socket when :func:`round_trip` serves the client (on
    ``session``'s connection if given), else through a redis-py pipeline (cluster,
    fakeredis).

    Returns:
        The replies to ``commands`` (errors as exception objects) and the XREAD reply as
        ``[(key, [(entry_id, {field: value})])]`` (or redis-py's equivalent shape). Values of
        fields ``d`` read from the socket here are :class:`Checked`.

    Raises:
        redis.exceptions.RedisError: The XREAD failed or the connection dropped.
    """
    replies = round_trip(client, [*commands, xread], place, session)
    if replies is not None:
        if isinstance(replies[-1], Exception):  # WRONGTYPE, say: as the pipeline below
            raise replies[-1]
        streams = [
            (key, [(eid, fields_of(fields)) for eid, fields in entries])
            for key, entries in replies[-1]
        ]
        return replies[:-1], streams
    pipe = client.pipeline(transaction=False)
    for command in (*commands, xread):
        pipe.execute_command(*command)
    replies = pipe.execute(raise_on_error=False)
    if isinstance(replies[-1], Exception):
        raise replies[-1]
    return replies[:-1], replies[-1]

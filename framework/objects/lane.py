"""A reading thread's own Redis connection: one round trip without pool or pipeline.

A mailbox reader makes one round trip per message: its replies or object, upkeep, then
``XREAD``/``XREADGROUP BLOCK``. Through a redis-py pipeline that costs a pool checkout
and release (a lock, a ``poll`` and metrics each), a retry wrapper, per-command argument
handling and reply callbacks: tens of microseconds of Python, per message, on each side.
A :class:`Lane` keeps one connection of the blocking pool for as long as its reader lives.
On a connection the framework built, it packs small commands with hiredis, writes them
with one ``sendall`` and parses the replies with its own hiredis reader, straight on the
socket (commands with a large value go through the connection's zero-copy packer); on
any other connection (fakeredis, a user's client) it uses the connection's own packer
and parser. A dropped connection is disconnected, so the next round trip connects
afresh. On a cluster, whose client routes each command by key, the commands go through
a redis-py pipeline instead. Errors are mapped to :mod:`framework.exceptions`.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.exceptions as rex
from redis._parsers.base import BaseParser

from framework._raw import recv_into, send_all
from framework.connection import RedisConnection
from framework.wire import ZeroCopyConnection, ZeroCopyUnixDomainSocketConnection, pack_small

__all__ = ["Command", "Lane"]

#: A Redis command and its arguments, e.g. ``("XDEL", key, eid)``.
Command = tuple[Any, ...]
#: Connections whose socket a lane reads itself (plain sockets, hiredis-compatible replies).
_RAW = (ZeroCopyConnection, ZeroCopyUnixDomainSocketConnection)
#: Bytes read from the socket per ``recv_into`` (redis-py's own read size).
_READ_SIZE = 1 << 16
#: What the reader returns while a reply is incomplete (``False`` is a RESP3 reply).
_INCOMPLETE = object()
#: RESP3 push messages (client tracking, maintenance notices) answer no command.
_PUSH = getattr(hiredis, "PushNotification", ())


class Lane:
    """Round trips on one connection that only its owner uses, one thread at a time.

    Args:
        conn: The connection whose blocking pool lends the connection.
        what: The operation, for error messages (e.g. ``"read mailbox 'fw:...'"``).
    """

    def __init__(self, conn: RedisConnection, what: str) -> None:
        self._conn = conn
        self._what = what
        self._held: tuple[Any, Any] | None = None  # (pool, connection)
        self._wire: _Wire | None = None  # raw I/O on the held connection's socket

    def round_trip(self, commands: Sequence[Command], quiet: Sequence[Command] = ()) -> list[Any]:
        """Send ``quiet`` then ``commands`` in one write; read every reply.

        The replies of the ``quiet`` commands are read and dropped, their errors
        unreported. (``CLIENT REPLY SKIP`` would spare reading them, but where an ACL
        denies ``CLIENT`` Redis answers the denial *and* the command, and every later
        reply would be taken for the one before it.)

        Returns:
            The raw replies to ``commands``, in order (RESP2 or RESP3 shapes, as the
            connection speaks).

        Raises:
            BackendError: The first command Redis answered with an error (raised once
                every reply was read, so the connection stays usable).
            BackendUnavailable: The connection dropped (it is disconnected).
            BackendTimeout: Redis did not answer within the socket timeout.
            ClosedError: The connection was closed.
        """
        failed = commands[-1]  # a dropped connection is the round trip's, named by its read
        try:
            client = self._conn.blocking  # raises ClosedError once the connection is closed
            if self._conn.is_cluster:
                replies = _pipelined(client, quiet, commands)
            else:
                replies = self._exchange(client, quiet, commands)[len(quiet) :]
            for command, reply in zip(commands, replies, strict=True):
                if isinstance(reply, rex.ResponseError):
                    failed = command
                    raise reply
            return replies
        except (rex.RedisError, rex.RedisClusterException):
            with self._conn.mapped_errors(self._describe(failed), command=str(failed[0])):
                raise

    def _describe(self, command: Command) -> str:
        """What ``command`` did, for an error: a write to another key is not the read."""
        if str(command[0]).upper() == "XADD":
            return f"post to mailbox {_text(command[1])!r}"
        return self._what

    def _exchange(
        self, client: Any, quiet: Sequence[Command], commands: Sequence[Command]
    ) -> list[Any]:
        """Every reply, to ``quiet`` and ``commands``, in order."""
        everything = [*quiet, *commands]
        if self._held is None:
            pool = client.connection_pool
            self._held = (pool, pool.get_connection())
        connection: Any = self._held[1]
        raw = isinstance(connection, _RAW)
        try:
            if not raw:
                connection.send_packed_command(connection.pack_commands(everything))
                return [_reply(connection) for _ in everything]
            if connection._sock is None:
                connection.connect()  # after a dropped connection: a fresh one, handshake done
            if self._wire is None or self._wire.sock is not connection._sock:
                self._wire = _Wire(connection._sock)
            packed = pack_small(connection, everything)
            if packed is None:  # a large value: the zero-copy packer, one gathered write
                connection.send_packed_command(connection.pack_commands(everything))
            else:
                send_all(connection._sock, packed)
            return self._wire.read(len(everything))
        except BaseException:
            connection.disconnect()  # a reply may be half read: start afresh next time
            self._wire = None
            raise

    def close(self) -> None:
        """Give the connection back to its pool; idempotent."""
        held, self._held, self._wire = self._held, None, None
        if held is not None:
            pool, connection = held
            pool.release(connection)


class _Wire:
    """Replies read straight from a connected socket by a hiredis reader of its own.

    Errors are redis-py's: ``ResponseError`` (and its subclasses, as redis-py maps error
    replies) returned in place of a reply, ``TimeoutError`` and ``ConnectionError`` raised
    (:func:`~framework._raw.recv_into`).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = hiredis.Reader(
            protocolError=rex.InvalidResponse,
            replyError=BaseParser.parse_error,
            notEnoughData=_INCOMPLETE,
        )
        self._buffer = bytearray(_READ_SIZE)

    def read(self, count: int) -> list[Any]:
        replies: list[Any] = []
        while len(replies) < count:
            reply = self._reader.gets()
            if reply is _INCOMPLETE:
                received = recv_into(self.sock, self._buffer)
                self._reader.feed(self._buffer, 0, received)  # type: ignore[arg-type]  # a buffer
            elif not isinstance(reply, _PUSH):
                replies.append(reply)
        return replies


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _reply(connection: Any) -> Any:
    try:
        return connection.read_response()
    except rex.ResponseError as exc:  # Redis answered with an error: the reply is complete
        return exc


def _pipelined(client: Any, quiet: Sequence[Command], commands: Sequence[Command]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in (*quiet, *commands):
        pipe.execute_command(*command)
    return list(pipe.execute(raise_on_error=False))[len(quiet) :]  # quiet ones: unreported

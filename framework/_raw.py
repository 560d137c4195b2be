"""Send a few commands in one round trip on one pooled connection, without retries.

redis-py's ``Pipeline`` costs about 14 µs of CPU per execution on top of the I/O
(object set-up, reset, instrumentation); on the per-object hot paths of object
streams (store-and-publish, fetch-and-evict) that is a large share. This helper
packs the commands with the connection's own packer (zero-copy for large
values), sends them at once and reads every reply. It never retries, so it suits
non-idempotent writes. Clients it does not handle (cluster, fakeredis) get
``None`` and the caller uses a pipeline.

Taking a connection from redis-py 8's pool and giving it back costs another ~7 us
per call (locking, a readiness check, connection-count instrumentation). A
publisher, which makes one round trip per message, keeps one connection instead:
:class:`PinnedConnection`.
"""

from __future__ import annotations

import os
import select
import socket
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["PinnedConnection", "recv_into", "round_trip", "send_all"]


def round_trip(
    client: Any,
    commands: Sequence[tuple[Any, ...]],
    *,
    errors: bool = False,
    timeout: float | None = None,
) -> list[Any] | None:
    """Run ``commands`` in one round trip and return their raw replies.

    Args:
        client: A ``redis.Redis`` client (anything else returns ``None``).
        commands: Commands as argument tuples, e.g. ``("SET", key, value)``.
        errors: Return error replies in place (as ``ResponseError`` objects) instead
            of raising the first one.
        timeout: Longest wait (s) for each reply, instead of the socket timeout (a
            caller with a deadline; a reply that does not come drops the connection).

    Returns:
        One reply per command, or ``None`` if ``client`` is not supported here.

    Raises:
        redis.exceptions.RedisError: The first error reply (after every reply has
            been read, so the connection stays usable), or a connection error (the
            connection is then dropped). Callers map them with ``mapped_errors``.
    """
    if type(client) is not redis.Redis:
        return None
    pool = client.connection_pool
    connection: Any = pool.get_connection()
    try:
        return _exchange(connection, commands, errors, timeout)
    finally:
        pool.release(connection)


def _exchange(
    connection: Any,
    commands: Sequence[tuple[Any, ...]],
    errors: bool = False,
    timeout: float | None = None,
) -> list[Any]:
    """Send ``commands`` on ``connection`` and read every reply (see :func:`round_trip`)."""
    wait: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    try:
        if timeout is not None and connection._sock is None:
            _connect_within(connection, timeout)
        connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        error: ResponseError | None = None
        for _ in commands:
            try:
                replies.append(connection.read_response(**wait))
            except ResponseError as exc:  # the other replies are still on the wire
                error = error or exc
                replies.append(exc)
    except BaseException:
        connection.disconnect()  # replies may be left unread: never reuse it
        raise
    if error is not None and not errors:
        raise error
    return replies


def _connect_within(connection: Any, timeout: float) -> None:
    """Connect, waiting at most ``timeout`` for each reply of the handshake.

    The handshake (``HELLO``, ``AUTH``, ``CLIENT SETINFO``) would otherwise wait out the
    socket timeout on a frozen Redis, whatever the caller's deadline.
    """
    saved = connection.socket_timeout
    connection.socket_timeout = timeout
    try:
        connection.connect()
    finally:
        connection.socket_timeout = saved
        if connection._sock is not None:
            connection._sock.settimeout(saved)


class PinnedConnection:
    """One connection of a client's pool, kept for :meth:`round_trip` until :meth:`close`.

    Thread-safe: a call that finds the pinned connection busy in another thread takes
    one from the pool as :func:`round_trip` does. Like the pool, it starts afresh
    when the server closed the connection while it was idle (Redis restarted, a
    ``timeout`` setting, ``CLIENT KILL``): nothing was sent, so nothing fails. A
    connection that drops during a call raises; the next call reconnects (redis-py
    connects a connection without a socket when it sends). After a fork the child
    takes a connection of its own.

    Args:
        client: A ``redis.Redis`` client; for any other client :meth:`round_trip`
            returns ``None``, as :func:`round_trip` does.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._served = type(client) is redis.Redis
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pid = os.getpid()
        self._watched: Any = None  # the socket that _poller watches
        self._poller = select.poll()

    def round_trip(
        self, commands: Sequence[tuple[Any, ...]], timeout: float | None = None
    ) -> list[Any] | None:
        """Run ``commands`` in one round trip; see :func:`round_trip`."""
        connection = self.acquire()
        if connection is None:
            return round_trip(self._client, commands, timeout=timeout)
        try:
            return _exchange(connection, commands, timeout=timeout)
        finally:
            self.release()

    def acquire(self) -> Any:
        """The kept connection, for this thread alone until :meth:`release`.

        None when the client is not served here or another thread holds the
        connection; the caller then takes one from the pool (and releases nothing).
        """
        if not self._served or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._connection is None or self._pid != os.getpid():
                self._connection = self._client.connection_pool.get_connection()
                self._pid = os.getpid()
            else:
                self._drop_if_closed()
        except BaseException:
            self._lock.release()
            raise
        return self._connection

    def release(self) -> None:
        """End the use that :meth:`acquire` began."""
        self._lock.release()

    def _drop_if_closed(self) -> None:
        """Disconnect an idle connection that has something to read: its end of file.

        One ``poll`` system call (~1 us); the pool's own check costs several.
        """
        sock = getattr(self._connection, "_sock", None)
        if sock is None:
            return
        if sock is not self._watched:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)
            self._watched = sock
        if self._poller.poll(0):
            self._connection.disconnect()

    def close(self) -> None:
        """Give the connection back to the pool (idempotent; a later call takes it again)."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and self._pid == os.getpid():
                self._client.connection_pool.release(connection)


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)``, failures raised as redis-py's exceptions (as its own I/O does).

    Raises:
        redis.exceptions.TimeoutError: The socket timed out.
        redis.exceptions.ConnectionError: The connection failed.
    """
    try:
        sock.sendall(data)
    except TimeoutError as exc:  # socket.timeout
        raise RedisTimeoutError("Timeout writing to socket") from exc
    except OSError as exc:
        raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc


def recv_into(sock: socket.socket, buffer: Any) -> int:
    """``sock.recv_into(buffer)``: the bytes received, at least one.

    Raises:
        redis.exceptions.TimeoutError: The socket timed out.
        redis.exceptions.ConnectionError: The connection failed or the server closed it.
    """
    try:
        received = sock.recv_into(buffer)
    except TimeoutError as exc:  # socket.timeout
        raise RedisTimeoutError("Timeout reading from socket") from exc
    except OSError as exc:
        raise RedisConnectionError(f"Error while reading from socket: {exc}") from exc
    if not received:
        raise RedisConnectionError("Connection closed by server.")
    return received

"""Redis clients that follow the framework's client policy (DESIGN.md, REDIS_FACTS.md §0).

A :class:`RedisConnection` hands out three clients, each with its own pool:

* ``client`` for idempotent commands (GET/SET/DEL/XRANGE/explicit-id XADD...): bounded
  retries with jittered exponential backoff.
* ``once`` for commands that must not run twice (auto-id XADD, INCR, PUBLISH, GETDEL,
  mutating Lua): no retries, because redis-py resends the whole command after a dropped
  reply and duplicates the write (redis-py #3554).
* ``blocking`` for ``XREAD BLOCK``/``XREADGROUP BLOCK`` and pub/sub: a socket timeout longer
  than :data:`MAX_BLOCK_MS`, so a bounded block never times out client-side (redis-py #2807).

The clients' connections pack commands without copying large values
(:mod:`framework.wire`). :func:`mapped_errors` turns Redis exceptions into
:mod:`framework.exceptions`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import redis
import redis.exceptions as rex
from redis import connection as rconn
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from framework._connection_errors import mapped_errors
from framework._connection_errors import raise_mapped as _raise_mapped
from framework.buffers import BytesLike, Segments, byte_view
from framework.cluster_keys import StreamKeysParser
from framework.exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    ClosedError,
    ConfigurationError,
    PermissionDenied,
)
from framework.keys import KeySchema
from framework.settings import RedisSettings
from framework.wire import (
    ZeroCopyConnection,
    ZeroCopySSLConnection,
    ZeroCopyUnixDomainSocketConnection,
    packs_without_copies,
)

__all__ = ["MAX_BLOCK_MS", "MAX_OUTAGE", "RedisConnection", "mapped_errors"]

logger = logging.getLogger(__name__)

#: Longest BLOCK (ms) any framework blocking read may use; the blocking client's socket
#: timeout exceeds it, and readers check their stop flag at least this often.
MAX_BLOCK_MS: Final = 1000
#: Default seconds a subscriber rides out an unreachable Redis before its read raises.
MAX_OUTAGE: Final = 30.0
#: Segments up to this size (bytes) are sent joined (see :meth:`RedisConnection.bulk`).
JOIN_BELOW: Final = 6000
#: First retry delay (s) of the ``client`` backoff; doubles per attempt, with jitter.
RETRY_BACKOFF_BASE: Final = 0.02
#: Longest retry delay (s) of the ``client`` backoff.
RETRY_BACKOFF_CAP: Final = 1.0


class RedisConnection:
    """The framework's handle on one Redis deployment: three policy-bound clients.

    Clients are built on first use; each owns a connection pool of
    ``settings.max_connections`` (per node on a cluster). ``close()`` disconnects every pool
    this object built. An injected client is used for all three roles and is never closed:
    its owner closes it.

    Args:
        settings: Where Redis is. Defaults to ``FRAMEWORK_REDIS_URL`` from the environment,
            else ``RedisSettings()`` (127.0.0.1:6379). With ``client`` it only supplies the
            key prefix.
        client: An existing ``redis.Redis``, ``RedisCluster`` or fakeredis client to use.
            It must return bytes: one built with ``decode_responses=True`` is refused.

    Raises:
        ConfigurationError: If ``client`` was built with ``decode_responses=True``.

    Attributes:
        settings: The settings in use; ``keys``: their :class:`KeySchema`; ``is_cluster``.
    """

    def __init__(self, settings: RedisSettings | None = None, *, client: Any = None) -> None:
        if client is not None and _decodes_responses(client):
            # Every reader compares reply fields to bytes: str replies would lose messages.
            raise ConfigurationError(
                f"The injected client {type(client).__name__} was built with "
                "decode_responses=True; the framework needs bytes replies: build the client "
                "without it."
            )
        if settings is None:
            settings = RedisSettings.from_env() if client is None else None
        self.settings: RedisSettings = RedisSettings() if settings is None else settings
        self.keys = KeySchema(self.settings.prefix)
        self._injected = client
        self._url = self.settings.url() if client is None else _describe_client(client)
        #: How to give this connection the credentials it lacks, when the usual advice
        #: (a password in the URL) does not apply: said when Redis asks for a password.
        self.auth_hint: str | None = None
        self.is_cluster: bool = (
            isinstance(client, RedisCluster) if client is not None else self.settings.cluster
        )
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> RedisConnection:
        """Connect to the deployment a URL names (see :meth:`RedisSettings.from_url`).

        Raises:
            ConfigurationError: If the URL or an override is invalid.
        """
        return cls(RedisSettings.from_url(url, **overrides))

    @property
    def client(self) -> Any:
        """Client for idempotent commands; retries ``settings.retries`` times with backoff."""
        return self._role("client")

    @property
    def once(self) -> Any:
        """Client for non-idempotent writes; never retries, so a write is sent at most once."""
        return self._role("once")

    @property
    def blocking(self) -> Any:
        """Client for ``XREAD BLOCK`` and pub/sub; its socket timeout exceeds MAX_BLOCK_MS."""
        return self._role("blocking")

    @property
    def zero_copy(self) -> bool:
        """Whether Segments and memoryviews are sent without copies (our packer is in use)."""
        return self._injected is None or _uses_zero_copy(self._injected)

    def bulk(self, value: Segments | BytesLike) -> Any:
        """Return ``value`` in the form this connection's clients send fastest.

        Args:
            value: A large value: Segments, bytes, bytearray, memoryview or any buffer.

        Returns:
            ``value`` itself (Segments, or a flat byte view) when :attr:`zero_copy`;
            otherwise a form any redis-py client accepts (Segments joined into bytes).
            Segments of at most ``JOIN_BELOW`` bytes are always joined.
        """
        if isinstance(value, Segments):
            if value.nbytes <= JOIN_BELOW:
                # Copying a few KB costs less than packing parts: hiredis packs it whole.
                return value.join()
            if self.zero_copy:
                return value
            # A single part needs no join: a flat view is a valid argument everywhere.
            return value.parts[0] if len(value.parts) == 1 else value.join()
        if isinstance(value, bytes):
            return value
        return byte_view(value)

    def url(self) -> str:
        """The deployment's URL, password masked; computed once (every error mapping asks)."""
        return self._url

    def raise_mapped(self, exc: Exception, what: str, *, command: str | None = None) -> NoReturn:
        """Raise the framework exception for redis-py's ``exc``, as :meth:`mapped_errors` does.

        For loops that run once per chunk, where a context manager's cost shows.
        """
        _raise_mapped(exc, what, self.url(), command, self.auth_hint)

    @contextmanager
    def mapped_errors(self, what: str, *, command: str | None = None) -> Iterator[None]:
        """:func:`mapped_errors` with this connection's redacted URL in the messages.

        Args:
            what: The operation, as a verb phrase naming its key or topic.
            command: The Redis command, stored on the exception.
        """
        with mapped_errors(what, url=self.url(), command=command, auth_hint=self.auth_hint):
            yield

    def ping(self) -> None:
        """Check that Redis answers, without retrying.

        Raises:
            AuthenticationFailed: Redis refused the credentials, or needs some.
            PermissionDenied: The ACL user may not run PING.
            BackendUnavailable: Redis is unreachable, timed out or answered with an error.
            ConfigurationError: The URL names a database this Redis does not have.
            ClosedError: The connection was closed.
        """
        try:
            with self.mapped_errors("ping Redis", command="PING"):
                self.once.ping()
        except BackendError as exc:
            if isinstance(exc, (BackendUnavailable, AuthenticationFailed, PermissionDenied)):
                raise
            if "DB index is out of range" in str(exc):  # SELECT, as the connection opened
                raise ConfigurationError(
                    f"Redis at {self.url()} has no database {self.settings.db} (its "
                    "'databases' setting allows fewer); use a number it has, e.g. /0."
                ) from exc
            # The mapped message already says "Could not ping Redis: Redis at <url> ...".
            raise BackendUnavailable(str(exc), command="PING") from exc

    def close(self) -> None:
        """Disconnect every pool this connection built; safe to call more than once.

        An injected client is left open for its owner to close.
        """
        with self._lock:
            self._closed = True
            built, self._clients = self._clients, {}
        if self._injected is not None:
            return
        for role, client in built.items():
            logger.debug("Closing the %s client of %s", role, self.url())
            client.close()
            if not isinstance(client, RedisCluster):
                client.connection_pool.disconnect()

    def __enter__(self) -> RedisConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<RedisConnection {self.url()} cluster={self.is_cluster} "
            f"zero_copy={self.zero_copy}{state}>"
        )

    def _role(self, role: str) -> Any:
        with self._lock:  # builds each client once, also when threads race for it
            if self._closed:
                raise ClosedError(f"The Redis connection to {self.url()} is closed.")
            if self._injected is not None:
                return self._injected
            if role not in self._clients:
                self._clients[role] = self._build(role)
            return self._clients[role]

    def _build(self, role: str) -> Any:
        """Create the client for one role, applying the client policy."""
        s = self.settings
        timeout = s.socket_timeout + (MAX_BLOCK_MS / 1000 if role == "blocking" else 0)
        backoff = ExponentialWithJitterBackoff(RETRY_BACKOFF_BASE, RETRY_BACKOFF_CAP)
        retry = Retry(backoff, s.retries) if role == "client" else Retry(NoBackoff(), 0)
        kwargs = _common_kwargs(s, timeout)
        logger.debug("Building the %s client for %s", role, self.url())
        if not s.cluster:
            return redis.Redis(connection_pool=rconn.ConnectionPool(retry=retry, **kwargs))
        (host, port), *others = s.startup_nodes
        nodes = [ClusterNode(h, p) for h, p in others]  # type: ignore[no-untyped-call]
        try:
            # Only the url= form hands connection_class to the node pools: with host= or
            # startup_nodes= alone, redis-py 8.1 passes it to Redis(), which rejects it.
            url = f"redis://{_hostport(host, port)}"
            cluster = RedisCluster(url=url, startup_nodes=nodes, retry=retry, **kwargs)
        except (rex.RedisError, rex.RedisClusterException) as exc:
            # Construction reads the slot map, so any failure here means no usable node.
            raise BackendUnavailable(
                f"Could not connect to the Redis Cluster at {self.url()}: {exc}"
            ) from exc
        # Routes stream reads without a COMMAND GETKEYS round trip before each one. The
        # wrapper stands in for redis-py's parser by its get_keys and delegates the rest.
        parser = StreamKeysParser(cluster.commands_parser)
        cluster.commands_parser = parser  # type: ignore[assignment]
        return cluster


def _common_kwargs(s: RedisSettings, socket_timeout: float) -> dict[str, Any]:
    """Connection-pool keyword arguments shared by every role."""
    kwargs: dict[str, Any] = {
        "username": s.username,
        "password": s.password.get_secret_value() if s.password else None,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": s.connect_timeout,
        "max_connections": s.max_connections,
        "decode_responses": False,
    }
    if s.unix_socket_path is not None:
        kwargs.update(connection_class=ZeroCopyUnixDomainSocketConnection, path=s.unix_socket_path)
    elif s.ssl:
        _check_tls_files(s)
        kwargs["connection_class"] = ZeroCopySSLConnection
        kwargs.update(s.model_dump(include={"ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}))
        kwargs["ssl_cert_reqs"] = s.ssl_cert_reqs
    else:
        kwargs["connection_class"] = ZeroCopyConnection
    if not s.unix_socket_path and not s.cluster:
        kwargs.update(host=s.host, port=s.port)
    if not s.cluster:
        kwargs["db"] = s.db
    return kwargs


def _check_tls_files(s: RedisSettings) -> None:
    """Name a missing TLS file up front: the TLS handshake's own error does not."""
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        path = getattr(s, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigurationError(f"The TLS file {name}={path!r} does not exist.")


def _uses_zero_copy(client: Any) -> bool:
    """Whether an injected client's connections are built with our packer."""
    if isinstance(client, RedisCluster):
        cls = client.nodes_manager.connection_kwargs.get("connection_class")
    else:
        cls = getattr(getattr(client, "connection_pool", None), "connection_class", None)
    return packs_without_copies(cls)


def _decodes_responses(client: Any) -> bool:
    """Whether an injected client decodes replies to str (``decode_responses``).

    Reads the connection kwargs its pools build connections from:
    ``connection_pool.connection_kwargs`` for ``redis.Redis`` and fakeredis, the nodes
    manager's for ``RedisCluster``. redis-py's encoder tests the value for truth (a URL's
    ``?decode_responses=false`` stays the string ``"false"`` and decodes), and so does this.
    False for a client whose setting cannot be read.
    """
    get_kwargs = getattr(client, "get_connection_kwargs", None)
    if not callable(get_kwargs):
        return False
    try:
        kwargs = get_kwargs()
    except Exception:  # noqa: BLE001 - a client of another kind: its setting is unknown
        return False
    return isinstance(kwargs, Mapping) and bool(kwargs.get("decode_responses", False))


def _describe_client(client: Any) -> str:
    """A password-free URL-like description of an injected client."""
    if type(client).__module__.startswith("fakeredis"):
        return "fakeredis://"
    if isinstance(client, RedisCluster):
        nodes = client.nodes_manager.nodes_cache.values()
        return "redis+cluster://" + ",".join(_hostport(n.host, n.port) for n in nodes)
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if "ssl_cert_reqs" in kwargs else "redis"
    host, port = kwargs.get("host", "localhost"), kwargs.get("port", 6379)
    return f"{scheme}://{_hostport(str(host), int(port))}/{kwargs.get('db', 0)}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

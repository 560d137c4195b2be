"""What every Redis publisher and subscriber shares: its connection and its lifecycle."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from framework._timeouts import checked_timeout
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.pubsub.protocols import Unset
from framework.settings import RedisSettings

__all__ = ["RedisShim", "connect", "split_topic_args", "topic_tuple"]

_S = TypeVar("_S", bound="RedisShim")


def wait_limit(timeout: float | Unset | None, default: float | None, who: str) -> float | None:
    """The longest wait of one ``next_message`` call: its own ``timeout``, else ``default``.

    Raises:
        ConfigurationError: If ``timeout`` is not a number of seconds >= 0 nor None.
    """
    if isinstance(timeout, Unset):
        return default
    return checked_timeout(timeout, f"{who}.next_message")


class RedisShim:
    """Base of the Redis shims: a context manager whose ``close()`` runs once.

    A shim built by ``from_url`` owns its connection and closes it; one given a
    connection leaves it to its owner. Subclasses free their own resources in
    :meth:`_release`.
    """

    connection: RedisConnection
    _owns_connection: bool = False
    _closed: bool = False

    def close(self) -> None:
        """Close the shim (idempotent); closes the connection only if the shim owns it."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()
        finally:  # a failed release must not leak the connection this shim owns
            if self._owns_connection:
                self.connection.close()

    def _release(self) -> None:
        """Free what the shim holds besides the connection (nothing by default)."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    connection: RedisConnection | str | None, port: Any, kwargs: dict[str, Any]
) -> tuple[RedisConnection, bool]:
    """The connection of a shim, and whether the shim owns it.

    A shim takes a :class:`RedisConnection` (borrowed), or ProxyStore's
    ``hostname, port, **kwargs`` (a connection of its own; ``kwargs`` are
    :class:`~framework.settings.RedisSettings` fields such as ``db`` or ``password``).

    Raises:
        ConfigurationError: If the arguments fit neither form.
    """
    hostname = kwargs.pop("hostname", None) if connection is None else connection
    if isinstance(hostname, RedisConnection):
        if port is not None or kwargs:
            raise ConfigurationError(
                f"A shim given a RedisConnection takes no port or settings, got {sorted(kwargs)}."
            )
        return hostname, False
    if isinstance(port, str) and port.isdigit():
        port = int(port)  # redis-py, under ProxyStore's shims, takes "6379" too
    if not isinstance(hostname, str) or type(port) is not int:
        raise ConfigurationError(
            "A Redis shim takes a RedisConnection, or a hostname and an int port "
            f"(ProxyStore's form); got {hostname!r} and {port!r}."
        )
    try:
        settings = RedisSettings(host=hostname, port=port, **_settings_of(kwargs))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Invalid Redis settings for a shim: {exc}") from exc
    return RedisConnection(settings), True


#: redis-py keywords ProxyStore's shims pass on, and the setting each one is here.
_RENAMED = {"socket_connect_timeout": "connect_timeout"}
#: redis-py keywords of connection upkeep that the framework's client policy decides
#: (health checks, retries, keep-alive, the client's name): accepted and left to it.
_POLICY = frozenset(
    {"health_check_interval", "retry_on_timeout", "socket_keepalive", "client_name"}
)


def _settings_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """:class:`RedisSettings` fields from the redis-py keywords of ProxyStore's form."""
    if kwargs.get("decode_responses"):
        raise ConfigurationError(
            "decode_responses=True cannot be used: messages and objects are bytes. Leave it out."
        )
    return {
        _RENAMED.get(name, name): value
        for name, value in kwargs.items()
        if name not in _POLICY and name != "decode_responses"
    }


def split_topic_args(
    connection: RedisConnection | str | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int | None, str | Sequence[str]]:
    """A subscriber's port (ProxyStore's form) and topic(s), from either construction form.

    ``(conn, topic)`` gives ``(None, topic)``; ProxyStore's ``(hostname, port, topic)``,
    with any of them by keyword, gives ``(port, topic)``. ``kwargs`` loses ``port`` and
    ``topic``.

    Raises:
        ConfigurationError: If no topic is given, or too many positional arguments.
    """
    rest = list(args)
    port = None
    if not isinstance(connection, RedisConnection):
        port = kwargs.pop("port") if "port" in kwargs else (rest.pop(0) if rest else None)
    found = kwargs.pop("topic") if "topic" in kwargs else (rest.pop(0) if rest else None)
    if found is None or rest:
        raise ConfigurationError(
            "A subscriber takes (connection, topic) or ProxyStore's (hostname, port, topic)."
        )
    return port, found


def topic_tuple(topic: Any) -> tuple[str, ...]:
    """A subscriber's ``topic`` argument (one topic or a sequence of them) as a tuple.

    Raises:
        ConfigurationError: If ``topic`` is neither a str nor a non-empty iterable of
            non-empty str (an int, say, would fail later with a puzzling ``TypeError``).
    """
    if isinstance(topic, str):
        topics: tuple[Any, ...] = (topic,)
    elif isinstance(topic, Iterable) and not isinstance(topic, bytes | bytearray):
        topics = tuple(topic)
    else:
        raise ConfigurationError(
            f"topic must be a topic name (str) or an iterable of them, got {topic!r} "
            f"({type(topic).__name__})."
        )
    if not topics:
        raise ConfigurationError("A subscriber needs at least one topic.")
    bad = [t for t in topics if not isinstance(t, str) or not t]
    if bad:
        raise ConfigurationError(f"Every topic must be a non-empty str, got {bad[0]!r}.")
    return topics

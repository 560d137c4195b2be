"""Which Redis a ``RedisStore`` config names, and with which local credentials."""

from __future__ import annotations

import socket

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.keys import DEFAULT_PREFIX
from framework.settings import RedisSettings

__all__ = ["public_url", "with_local_credentials"]

_SECRET_FIELDS = ("username", "password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def public_url(connection: RedisConnection) -> str:
    """The connection's URL without user name, password, TLS files or prefix."""
    settings, described = connection.settings, connection.url()
    if described != settings.url():
        # An injected client: its settings are defaults, its description is the truth.
        try:
            settings = RedisSettings.from_url(described)
        except ConfigurationError:
            return described  # no URL form (e.g. "fakeredis://"): cannot be rebuilt
    blank = dict.fromkeys(_SECRET_FIELDS)
    return settings.model_copy(update={**blank, "prefix": DEFAULT_PREFIX}).url()


def with_local_credentials(settings: RedisSettings) -> tuple[RedisSettings, str | None]:
    """Add credentials from ``FRAMEWORK_REDIS_URL`` when it names the same deployment.

    Returns:
        The settings (with the variable's credentials when it names their deployment),
        and where the variable points when it names another one, else None.
    """
    local = RedisSettings.from_env()
    if local is None:
        return settings, None
    if not _same_deployment(local, settings):
        return settings, _where(local)
    update = {name: getattr(local, name) for name in _SECRET_FIELDS}
    return settings.model_copy(update=update), None


def _where(settings: RedisSettings) -> str:
    """The deployment ``settings`` name, without credentials."""
    if settings.unix_socket_path is not None:
        return settings.unix_socket_path
    if settings.cluster:
        return ",".join(f"{host}:{port}" for host, port in settings.startup_nodes)
    return f"{settings.host}:{settings.port}"


def _same_deployment(a: RedisSettings, b: RedisSettings) -> bool:
    if a.cluster != b.cluster or a.ssl != b.ssl:
        return False
    if a.unix_socket_path is not None or b.unix_socket_path is not None:
        return a.unix_socket_path == b.unix_socket_path
    if a.cluster:
        return bool(set(a.startup_nodes) & set(b.startup_nodes))
    return a.port == b.port and _same_host(a.host, b.host)


def _same_host(a: str, b: str) -> bool:
    """Whether two host names are one machine: equal, or resolving to a common address.

    ``localhost`` in one process and ``127.0.0.1`` in another name the same server.
    """
    return a == b or bool(_addresses(a) & _addresses(b))


def _addresses(host: str) -> set[str]:
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        return {str(info[4][0]) for info in found}
    except (OSError, UnicodeError):  # unresolvable here: only its spelling can match
        return set()

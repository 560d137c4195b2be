"""Which Redis a ``RedisStore`` config names, and with which local credentials."""

from __future__ import annotations

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


def with_local_credentials(settings: RedisSettings) -> RedisSettings:
    """Add credentials from ``FRAMEWORK_REDIS_URL`` when it names the same deployment."""
    local = RedisSettings.from_env()
    if local is None or not _same_deployment(local, settings):
        return settings
    return settings.model_copy(update={name: getattr(local, name) for name in _SECRET_FIELDS})


def _same_deployment(a: RedisSettings, b: RedisSettings) -> bool:
    if a.cluster != b.cluster or a.ssl != b.ssl:
        return False
    if a.unix_socket_path is not None or b.unix_socket_path is not None:
        return a.unix_socket_path == b.unix_socket_path
    if a.cluster:
        return bool(set(a.startup_nodes) & set(b.startup_nodes))
    return (a.host, a.port) == (b.host, b.port)

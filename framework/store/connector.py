"""``RedisConnector``: ProxyStore's way of naming the Redis a ``Store`` keeps objects in.

``Store(name, RedisConnector(hostname, port))`` builds a :class:`~framework.store.RedisStore`
that owns a connection to ``hostname:port``; that is all a connector does here (the
store does the I/O). Keyword arguments are :class:`~framework.settings.RedisSettings`
fields (``db``, ``username``, ``password``, ``ssl``, ``socket_timeout``...), which
ProxyStore's connector cannot set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError
from framework.settings import RedisSettings

if TYPE_CHECKING:
    from framework.store.redis import RedisStore

__all__ = ["RedisConnector"]


class RedisConnector:
    """Where a ProxyStore-style ``Store(name, connector)`` keeps its objects: one Redis.

    Args:
        hostname: Redis host.
        port: Redis port.
        clear: When the store closes, delete every object under its key prefix
            (ProxyStore's connector flushes the whole database instead).
        kwargs: Further :class:`~framework.settings.RedisSettings` fields.

    Raises:
        ConfigurationError: If a setting is invalid.
    """

    #: The store class ``Store(name, RedisConnector(...))`` builds (set by its module).
    store_type: ClassVar[type[RedisStore]]

    def __init__(self, hostname: str, port: int, clear: bool = False, **kwargs: Any) -> None:
        self.hostname = hostname
        self.port = port
        self.clear = bool(clear)
        try:
            self.settings = RedisSettings(host=hostname, port=port, **kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"Invalid Redis connector settings: {exc}") from exc

    def connect(self) -> RedisConnection:
        """Open a new connection (the store that asked for it owns and closes it)."""
        return RedisConnection(self.settings)

    def config(self) -> dict[str, Any]:
        """ProxyStore's connector config: host, port and ``clear``."""
        return {"hostname": self.hostname, "port": self.port, "clear": self.clear}

    def close(self) -> None:
        """Nothing to release: the store owns the connection."""

    def __repr__(self) -> str:
        return f"RedisConnector(hostname={self.hostname!r}, port={self.port})"

"""What every Redis publisher and subscriber shares: its connection and its lifecycle."""

from __future__ import annotations

from typing import TypeVar

from framework.connection import RedisConnection

__all__ = ["RedisShim"]

_S = TypeVar("_S", bound="RedisShim")


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
        self._release()
        if self._owns_connection:
            self.connection.close()

    def _release(self) -> None:
        """Free what the shim holds besides the connection (nothing by default)."""

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

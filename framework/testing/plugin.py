"""pytest fixtures for suites that test code built on the framework.

pytest loads this module in every run where the package is installed (entry point
``pytest11``); the fixtures are then available without a ``conftest.py`` import:

=====================  ========  ==========================================================
fixture                scope     what it provides
=====================  ========  ==========================================================
``fw_fake_conn``       function  a :class:`~framework.connection.RedisConnection` on a
                                 private in-process fakeredis server (no network, no Lua
                                 server process; the fastest choice)
``fw_fake_url``        function  the URL of a private fakeredis server served over TCP on
                                 loopback: pass it to child processes
``fw_redis_server``    session   an :class:`~framework.embedded.EmbeddedRedis` running a
                                 real ``redis-server`` (the test is skipped when
                                 ``redis-server`` is not on ``PATH``)
``fw_redis_url``       function  the URL of that server, emptied (``FLUSHALL``) first
``fw_redis_conn``      function  a ``RedisConnection`` to that server, emptied first
=====================  ========  ==========================================================

Every fixture closes what it created.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis

__all__ = ["fw_fake_conn", "fw_fake_url", "fw_redis_conn", "fw_redis_server", "fw_redis_url"]


@pytest.fixture
def fw_fake_conn() -> Iterator[RedisConnection]:
    """A RedisConnection on a fresh, private, in-process fakeredis server."""
    import fakeredis  # lazy: only suites that use the fixture pay for the import

    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    try:
        with RedisConnection(client=client) as conn:
            yield conn
    finally:
        client.close()  # an injected client is closed by its owner


@pytest.fixture
def fw_fake_url() -> Iterator[str]:
    """URL of a fresh fakeredis server on a loopback TCP port (reachable from children)."""
    with EmbeddedRedis(fake=True) as server:
        yield server.url


@pytest.fixture(scope="session")
def fw_redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server on a free loopback port for the session; skips without one."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    with EmbeddedRedis(fake_fallback=False) as server:
        yield server


@pytest.fixture
def fw_redis_url(fw_redis_server: EmbeddedRedis) -> str:
    """URL of the session's real redis-server, emptied before the test."""
    with fw_redis_server.connection() as conn:
        conn.client.flushall()
    return fw_redis_server.url


@pytest.fixture
def fw_redis_conn(fw_redis_url: str) -> Iterator[RedisConnection]:
    """A RedisConnection to the session's real redis-server, emptied before the test."""
    with RedisConnection.from_url(fw_redis_url) as conn:
        yield conn

"""Fixtures for the ProxyStore-API tests: a Redis reachable by host and port.

ProxyStore code names its Redis by ``hostname, port``; these tests run that code
against a fakeredis server on a TCP port and against the session's real
redis-server (flushed first), never the instance on 127.0.0.1:6379.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from framework.embedded import EmbeddedRedis


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.integration)])
def redis_address(request: pytest.FixtureRequest) -> Iterator[tuple[str, int]]:
    """``(hostname, port)`` of an empty Redis: a fakeredis TCP server, then a real server."""
    if request.param == "fake":
        with EmbeddedRedis(fake=True) as server:
            yield "127.0.0.1", server.ports[0]
        return
    server: EmbeddedRedis = request.getfixturevalue("redis_server")
    with redis.Redis(host="127.0.0.1", port=server.ports[0]) as client:
        client.flushall()
    yield "127.0.0.1", server.ports[0]

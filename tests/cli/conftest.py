"""Fixtures of the command-line tests: an admin client and an ACL user with a password."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis

from framework.embedded import EmbeddedRedis
from tests.cli.helpers import PASSWORD


@pytest.fixture
def admin(redis_url: str, real_conn: object) -> Iterator[redis.Redis]:
    """A plain client on the (flushed) session server, for preparing and checking state."""
    with redis.Redis.from_url(redis_url) as client:
        yield client


@contextmanager
def acl_user(admin: redis.Redis, port: int, name: str, *commands: str) -> Iterator[str]:
    """An ACL user on every key and channel, allowed ``commands``; yields its URL."""
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["*"],
        channels=["*"],
        commands=list(commands),
    )
    try:
        yield f"redis://{name}:{PASSWORD}@127.0.0.1:{port}/0"
    finally:
        admin.acl_deluser(name)


@pytest.fixture
def user_url(admin: redis.Redis, redis_server: EmbeddedRedis) -> Iterator[str]:
    """URL of an ACL user with every permission and a password that URLs reserve chars of."""
    with acl_user(admin, redis_server.ports[0], "fw-cli", "+@all") as url:
        yield url

"""Fixtures of the command-line tests: an admin client and an ACL user with a password."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
import redis

from framework.embedded import EmbeddedRedis
from tests.cli.helpers import PASSWORD, Running


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


@pytest.fixture
def reap() -> Iterator[Callable[[Running], Running]]:
    """Registers background CLI runs; whichever still runs at teardown is killed."""
    runs: list[Running] = []

    def register(run: Running) -> Running:
        runs.append(run)
        return run

    yield register
    for run in runs:
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait()


@pytest.fixture
def own_redis(require_redis_server: None) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own (on a free loopback port), for SIGSTOP.

    Teardown continues a stopped server before stopping it for good.
    """
    with EmbeddedRedis(fake_fallback=False) as server:
        try:
            yield server
        finally:
            for pid in server.pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

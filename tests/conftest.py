"""Shared fixtures: fakeredis, a session redis-server, a session local cluster, leak guards.

Backends (STYLE.md rule 11): ``conn`` runs a test on fakeredis and a real server,
``any_conn`` also on a three-master local cluster. Tests that need real Redis are
marked ``integration`` and cluster ones ``cluster`` (plus ``integration``)
automatically, from the fixtures they use.

Without ``redis-server`` on PATH such tests are skipped locally, but FAIL when the
environment variable ``CI`` is true: CI must never skip them silently.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from framework.embedded import EmbeddedRedis
from framework.store import registered_stores, unregister_store

if TYPE_CHECKING:
    from framework.connection import RedisConnection

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}

#: Seconds a test's ``fw-*`` threads get to finish after its fixtures are torn down.
THREAD_GRACE = 1.0

#: Fixtures that need a real redis-server / a local cluster, for automatic markers.
INTEGRATION_FIXTURES = frozenset({"require_redis_server", "redis_server", "redis_url", "real_conn"})
CLUSTER_FIXTURES = frozenset(
    {"require_redis_cluster", "redis_cluster", "cluster_url", "cluster_conn"}
)


def pytest_report_header() -> str:
    server = shutil.which("redis-server") or "not found"
    return (
        f"redis-server: {server}; CI={IN_CI} (missing redis-server {'fails' if IN_CI else 'skips'})"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the fixtures they (transitively) use."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & CLUSTER_FIXTURES:
            item.add_marker(pytest.mark.cluster)
            item.add_marker(pytest.mark.integration)
        elif names & INTEGRATION_FIXTURES:
            item.add_marker(pytest.mark.integration)


def _require(*programs: str) -> None:
    """Skip (locally) or fail (on CI) when a Redis program is missing."""
    missing = [name for name in programs if shutil.which(name) is None]
    if not missing:
        return
    reason = f"{' and '.join(missing)} not found on PATH (apt-get install redis-server redis-tools)"
    if IN_CI:
        pytest.fail(f"{reason}; CI=true, so tests that need real Redis must not be skipped.")
    pytest.skip(reason)


# --- real servers (session) -------------------------------------------------------------


@pytest.fixture(scope="session")
def require_redis_server() -> None:
    """Skip locally / fail on CI unless redis-server is installed."""
    _require("redis-server")


@pytest.fixture(scope="session")
def require_redis_cluster() -> None:
    """Skip locally / fail on CI unless redis-server and redis-cli are installed."""
    _require("redis-server", "redis-cli")


@pytest.fixture(scope="session")
def redis_server(require_redis_server: None) -> Iterator[EmbeddedRedis]:
    """A real redis-server for the whole session."""
    with EmbeddedRedis(fake_fallback=False) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(require_redis_cluster: None) -> Iterator[EmbeddedRedis]:
    """A local three-master Redis Cluster for the whole session."""
    with EmbeddedRedis(cluster=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session's real redis-server."""
    return redis_server.url


@pytest.fixture(scope="session")
def cluster_url(redis_cluster: EmbeddedRedis) -> str:
    """URL (``redis+cluster://...``) of the session's local cluster."""
    return redis_cluster.url


def _flushall(ports: tuple[int, ...]) -> None:
    """FLUSHALL on every node (on a cluster: every primary; there are no replicas)."""
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as client:
            client.flushall()


# --- connections (function) ---------------------------------------------------------------


@pytest.fixture
def fake_conn(fw_fake_conn: RedisConnection) -> RedisConnection:
    """A RedisConnection on a fresh, private fakeredis server (the shipped pytest plugin's)."""
    return fw_fake_conn


@pytest.fixture
def real_conn(redis_server: EmbeddedRedis) -> Iterator[RedisConnection]:
    """A RedisConnection on the session redis-server, flushed before the test."""
    _flushall(redis_server.ports)
    with redis_server.connection() as conn:
        yield conn


@pytest.fixture
def cluster_conn(redis_cluster: EmbeddedRedis) -> Iterator[RedisConnection]:
    """A RedisConnection on the session cluster, every primary flushed before the test."""
    _flushall(redis_cluster.ports)
    with redis_cluster.connection() as conn:
        yield conn


_REAL = pytest.param("real", id="real", marks=pytest.mark.integration)
_CLUSTER = pytest.param(
    "cluster", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]
)


@pytest.fixture(params=[pytest.param("fake", id="fake"), _REAL])
def conn(request: pytest.FixtureRequest) -> RedisConnection:
    """The same test on fakeredis and on a real redis-server."""
    result: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return result


@pytest.fixture(params=[pytest.param("fake", id="fake"), _REAL, _CLUSTER])
def any_conn(request: pytest.FixtureRequest) -> RedisConnection:
    """The same test on fakeredis, a real redis-server and a local cluster."""
    result: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return result


@pytest.fixture
def fake_tcp_url(fw_fake_url: str) -> str:
    """URL of a fresh fakeredis server served over TCP, reachable from child processes."""
    return fw_fake_url


# --- leak guards --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_leaked_store_registrations() -> Iterator[None]:
    """Fail a test that leaves a store registered (proxystore's registry guard)."""
    before = {id(store) for store in registered_stores()}
    yield
    leaked = [store for store in registered_stores() if id(store) not in before]
    for store in leaked:
        unregister_store(store)
        store.close()
    if leaked:
        pytest.fail(f"The test left stores registered: {leaked}.", pytrace=False)


def _fw_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("fw-") and t.is_alive()}


@pytest.fixture(autouse=True)
def _no_leaked_fw_threads() -> Iterator[None]:
    """Fail a test whose ``fw-*`` threads outlive it (their owner was not closed).

    Autouse, so it is torn down after the test's own function-scoped fixtures.
    """
    before = _fw_threads()
    yield
    deadline = time.monotonic() + THREAD_GRACE
    while (leaked := _fw_threads() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    if leaked:
        names = ", ".join(sorted(thread.name for thread in leaked))
        pytest.fail(
            f"Threads outlived the test by more than {THREAD_GRACE} s: {names}. "
            "Close (or use as a context manager) whatever started them.",
            pytrace=False,
        )

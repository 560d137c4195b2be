"""EmbeddedRedis: real server, local cluster, fakeredis fallback, cleanup on every path."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import redis
from redis.cluster import RedisCluster

import framework._redis_servers as redis_servers
import framework.embedded as embedded
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import BackendUnavailable, ClosedError, ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
MISSING = "/nonexistent/bin/redis-server"


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether ``pid`` exits (or is a zombie nobody reaped yet) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # raises if still taken
    return True


def _workdir(port: int) -> Path:
    with redis.Redis(port=port, decode_responses=True) as client:
        return Path(client.config_get("dir")["dir"])


def _redis_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if "redis" in p.name().lower()}


# --- real redis-server -------------------------------------------------------------------


def test_real_server_starts_answers_and_stops(require_redis_server: None) -> None:
    with EmbeddedRedis(fake_fallback=False) as server:
        assert not server.is_fake
        (port,) = server.ports
        (pid,) = server.pids
        assert server.url == f"redis://127.0.0.1:{port}"
        with redis.Redis(host="127.0.0.1", port=port) as client:
            assert client.info("server")["process_id"] == pid
            # No persistence: nothing may be written to disk behind the tests' backs.
            assert client.config_get("save")["save"] == ""
            assert client.config_get("appendonly")["appendonly"] == "no"
        workdir = _workdir(port)
        assert workdir.is_dir()
    assert _gone(pid)
    assert _port_free(port)
    assert not workdir.exists()
    assert server.pids == ()


def test_connection_uses_the_framework_client(require_redis_server: None) -> None:
    with EmbeddedRedis(fake_fallback=False) as server, server.connection() as conn:
        conn.client.set("k", b"v")
        assert conn.client.get("k") == b"v"


def test_close_is_idempotent_and_final(require_redis_server: None) -> None:
    server = EmbeddedRedis(fake_fallback=False)
    with pytest.raises(ClosedError, match="new"):
        _ = server.url
    server.start()
    assert server.start() is server  # already running: no second server
    (pid,) = server.pids
    server.close()
    server.close()
    assert _gone(pid)
    with pytest.raises(ClosedError):
        _ = server.url
    with pytest.raises(ClosedError, match="cannot be restarted"):
        server.start()


def test_port_owned_by_another_server_is_not_mistaken_for_ours(
    require_redis_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EmbeddedRedis(fake_fallback=False) as other:
        ports = iter([other.ports[0]])
        real_pick = redis_servers._pick_port
        monkeypatch.setattr(
            redis_servers, "_pick_port", lambda **kw: next(ports, None) or real_pick(**kw)
        )
        with EmbeddedRedis(fake_fallback=False) as server:
            assert server.ports != other.ports
            (pid,) = server.pids
            with redis.Redis(port=server.ports[0]) as client:
                assert client.info("server")["process_id"] == pid


def test_port_taken_before_bind_is_retried(
    require_redis_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # bound, not listening: redis cannot bind it
        taken = iter([squatter.getsockname()[1]])
        real_pick = redis_servers._pick_port
        monkeypatch.setattr(
            redis_servers, "_pick_port", lambda **kw: next(taken, None) or real_pick(**kw)
        )
        with EmbeddedRedis(fake_fallback=False) as server:
            assert server.ports[0] != squatter.getsockname()[1]


# --- startup failures --------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "redis-server"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_server_that_dies_reports_its_log(tmp_path: Path) -> None:
    exe = _script(tmp_path, 'echo "FATAL CONFIG: simulated failure"; exit 3')
    with pytest.raises(BackendUnavailable, match=r"(?s)exited with code 3.*simulated failure"):
        EmbeddedRedis(executable=exe).start()


def test_server_that_never_answers_times_out_and_is_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    sleep = f"exec {sys.executable} -c 'import time; time.sleep(60)'"
    exe = _script(tmp_path, f'echo $$ > {pidfile}; echo "starting slowly"; {sleep}')
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"(?s)did not answer.*starting slowly"):
        EmbeddedRedis(executable=exe, startup_timeout=0.5).start()
    assert time.monotonic() - started < 10
    assert _gone(int(pidfile.read_text()), timeout=0)


# --- cluster -------------------------------------------------------------------------------


def test_cluster_has_three_masters_and_enforces_crossslot(require_redis_cluster: None) -> None:
    with EmbeddedRedis(cluster=True) as cluster:
        assert len(cluster.ports) == 3
        assert cluster.url == "redis+cluster://" + ",".join(
            f"127.0.0.1:{port}" for port in cluster.ports
        )
        pids, workdir = cluster.pids, _workdir(cluster.ports[0])
        with redis.Redis(port=cluster.ports[0]) as node:
            nodes = node.cluster("NODES")  # parsed by redis-py: {"host:port": {...}}
            assert {f"127.0.0.1:{port}" for port in cluster.ports} == set(nodes)
            assert all("master" in info["flags"] for info in nodes.values())
            with pytest.raises(redis.exceptions.ClusterCrossSlotError):
                node.execute_command("MSET", "{a}x", "1", "{b}y", "2")
        with RedisCluster(host="127.0.0.1", port=cluster.ports[0]) as client:
            assert len(client.get_primaries()) == 3
            assert client.mset({"{t}:1": b"1", "{t}:2": b"2"})
            assert client.mget("{t}:1", "{t}:2") == [b"1", b"2"]
    assert all(_gone(pid) for pid in pids)
    assert not workdir.exists()


def test_cluster_start_failure_stops_started_nodes(
    require_redis_cluster: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = EmbeddedRedis(cluster=True)
    started: list[int] = []

    def broken(*args: object) -> None:
        started.extend(server.pids)
        raise BackendUnavailable("simulated cluster create failure")

    monkeypatch.setattr(embedded, "_create_cluster", broken)
    with pytest.raises(BackendUnavailable, match="simulated"):
        server.start()
    assert len(started) == 3
    assert all(_gone(pid, timeout=0) for pid in started)
    assert server.pids == ()
    with pytest.raises(ClosedError):
        server.start()


def test_cluster_without_redis_server_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="Cluster needs redis-server"):
        EmbeddedRedis(cluster=True, executable=MISSING).start()
    with pytest.raises(ConfigurationError, match="no cluster mode"):
        EmbeddedRedis(cluster=True, fake=True)


def test_cluster_without_redis_cli_fails_before_starting(
    require_redis_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    which = embedded.shutil.which
    monkeypatch.setattr(
        embedded.shutil, "which", lambda name: None if "redis-cli" in name else which(name)
    )
    before = _redis_children()
    with pytest.raises(ConfigurationError, match="redis-cli"):
        EmbeddedRedis(cluster=True).start()
    assert _redis_children() == before


# --- fakeredis fallback ------------------------------------------------------------------


def _child_set(url: str, key: str, value: bytes) -> None:
    with redis.Redis.from_url(url) as client:
        client.set(key, value)


def test_missing_server_falls_back_to_fake_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="framework.embedded"),
        EmbeddedRedis(executable=MISSING) as server,
    ):
        assert server.is_fake
        assert server.pids == ()
        assert any("fakeredis" in r.getMessage() for r in caplog.records)
        assert "fw-embedded-fake" in {t.name for t in threading.enumerate()}
        # Reachable from another process: the point of the TCP server.
        child = multiprocessing.get_context("spawn").Process(
            target=_child_set, args=(server.url, "from-child", b"hello")
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        with redis.Redis.from_url(server.url) as client:
            assert client.get("from-child") == b"hello"
        port = server.ports[0]
    assert "fw-embedded-fake" not in {t.name for t in threading.enumerate()}
    assert _port_free(port)


def test_fallback_can_be_refused() -> None:
    with pytest.raises(ConfigurationError, match="fake_fallback is off"):
        EmbeddedRedis(executable=MISSING, fake_fallback=False).start()


def test_fake_tcp_url_fixture_serves_fakeredis(fake_tcp_url: str) -> None:
    with redis.Redis.from_url(fake_tcp_url) as client:
        assert client.set("k", b"v")
        assert client.get("k") == b"v"


# --- safety nets ---------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import sys, time
    from framework.embedded import EmbeddedRedis
    server = EmbeddedRedis(fake_fallback=False).start()
    print(server.pids[0], server.ports[0], flush=True)
    if sys.argv[1] == "hang":
        time.sleep(120)
    # "exit": leave without close(); the finalizer must stop the server.
    """
)


def _run_child(mode: str, check: Callable[[subprocess.Popen[str], int], None]) -> None:
    """Run _CHILD, hand its redis-server pid to ``check``; its files must be gone after."""
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode], stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as child:
        assert child.stdout is not None
        pid, port = map(int, child.stdout.readline().split())
        workdir = _workdir(port)
        try:
            check(child, pid)
        finally:
            child.kill()
            if not _gone(pid, timeout=0):
                os.kill(pid, signal.SIGKILL)
            leftover = workdir.exists()
            shutil.rmtree(workdir, ignore_errors=True)
    assert not leftover or mode == "hang"  # a SIGKILLed owner cannot remove its files


def test_forgotten_server_is_stopped_at_exit(require_redis_server: None) -> None:
    def check(child: subprocess.Popen[str], pid: int) -> None:
        assert child.wait(30) == 0
        assert _gone(pid)

    _run_child("exit", check)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_killed_session(require_redis_server: None) -> None:
    def check(child: subprocess.Popen[str], pid: int) -> None:
        os.kill(child.pid, signal.SIGKILL)  # no atexit, no finalizer: only the kernel can help
        child.wait(30)
        assert _gone(pid)

    _run_child("hang", check)


# --- the shared fixtures themselves ---------------------------------------------------------


def test_any_conn_starts_empty_and_round_trips(any_conn: RedisConnection) -> None:
    key = any_conn.keys.obj("fixture-check")
    assert any_conn.client.get(key) is None
    any_conn.client.set(key, b"x" * 1000)
    assert any_conn.client.get(key) == b"x" * 1000


def test_conn_is_flushed_between_tests(conn: RedisConnection) -> None:
    # Runs after test_any_conn_starts_empty_and_round_trips wrote the same key.
    assert conn.client.get(conn.keys.obj("fixture-check")) is None

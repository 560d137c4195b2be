"""``framework check`` and ``framework bench`` as processes."""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

import pytest
import redis

from framework.embedded import EmbeddedRedis
from tests.cli.conftest import acl_user
from tests.cli.helpers import cli_env, run_cli
from tests.cli.test_errors import assert_one_error_line

#: The lock every benchmark run on this machine takes, so that runs never overlap.
BENCH_LOCK = Path("/work/wt/bench.lock")


def test_check_round_trips_through_the_given_redis(tmp_path: Path, redis_url: str) -> None:
    done = run_cli("check", "--size-mb", "1", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stderr
    for row in ("serialize (dumps)", "write (SET)", "read (GET)", "deserialize (loads)"):
        assert row in done.stdout
    assert f"Redis: {redis_url}" in done.stdout
    assert "OK: the object came back equal" in done.stdout


def test_check_without_any_redis_uses_fakeredis(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = cli_env(tmp_path) | {"PATH": str(empty)}
    assert shutil.which("redis-server", path=env["PATH"]) is None
    done = run_cli("check", "--size-mb", "0.5", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "embedded fakeredis TCP server" in done.stdout


def test_bench_refuses_unknown_names(tmp_path: Path) -> None:
    done = run_cli("bench", "nope", tmp_path=tmp_path)
    assert done.returncode == 2
    assert "Unknown benchmark(s) nope; known: [" in done.stderr
    assert "'cell'" in done.stderr


def test_bench_outside_a_checkout_says_where_to_run_it(tmp_path: Path) -> None:
    done = run_cli("bench", tmp_path=tmp_path, cwd=tmp_path)
    assert done.returncode == 1
    assert "run `framework bench` in the checkout's top directory" in done.stderr.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.timeout(900)  # waits for any other benchmark run on this machine to finish
def test_bench_prints_the_suites_tables(tmp_path: Path, require_redis_server: None) -> None:
    with open(BENCH_LOCK if BENCH_LOCK.parent.is_dir() else tmp_path / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = run_cli("bench", "connection", "--quick", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "benchmark: connection" in done.stdout
    assert "redis-py default MB/s" in done.stdout  # the baseline, side by side
    assert "ours MB/s" in done.stdout


def test_check_reports_the_step_that_failed_not_its_cleanup(
    tmp_path: Path, admin: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """A user who may neither SET nor DEL: before, the DEL's refusal hid the SET's."""
    port = redis_server.ports[0]
    with acl_user(admin, port, "no-set", "+@all", "-set", "-del") as url:
        done = run_cli("check", tmp_path=tmp_path, url=url)
    assert_one_error_line(done, "PermissionDenied", "write the check object", "SET")
    assert "delete the check key" not in done.stderr

"""``framework demo``: runs any number of times, with credentials, on a cluster and with
no Redis at all; leaves no keys; children never see the password on their command line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import redis

from framework._keyspace import primaries, scan_keys
from framework.connection import RedisConnection
from framework.demo import DemoPlan, run_demo
from framework.embedded import EmbeddedRedis
from tests.cli.helpers import PASSWORD, ROOT, RUN_TIMEOUT, cli_env, finish, run_cli, start_cli
from tests.deployment.test_tls_acl import readme_acl_rules

SMALL = ["--records", "200", "--arrays", "2", "--array-mb", "1", "--blob-mb", "4"]
SMALL += ["--rounds", "2", "--round-mb", "1"]


def _assert_ok(output: str) -> None:
    assert "object stream" in output
    assert "byte stream (1 upload, 2 cells)" in output
    assert "object protocol (" in output
    assert "MB/s" in output
    assert output.rstrip().endswith("OK: everything sent arrived intact.")


def test_twice_against_one_redis_with_a_password_leaves_no_keys(
    tmp_path: Path, user_url: str, admin: redis.Redis
) -> None:
    for _ in range(2):
        done = run_cli("demo", *SMALL, tmp_path=tmp_path, url=user_url)
        assert done.returncode == 0, done.stdout + done.stderr
        _assert_ok(done.stdout)
        assert PASSWORD not in done.stdout + done.stderr
        assert "fw-cli:***@" in done.stdout
        assert admin.dbsize() == 0


def test_children_get_the_password_but_not_on_their_command_line(
    tmp_path: Path, user_url: str
) -> None:
    run = start_cli("demo", *SMALL, "--blob-mb", "64", tmp_path=tmp_path, url=user_url)
    seen: set[int] = set()
    parent = psutil.Process(run.proc.pid)
    while run.proc.poll() is None:
        try:
            for child in parent.children(recursive=True):
                assert "pa/ss" not in " ".join(child.cmdline())
                seen.add(child.pid)
        except psutil.NoSuchProcess:
            pass  # a child ended between listing and reading its command line
        time.sleep(0.01)
    assert finish(run.proc) == 0, run.output()
    assert len(seen) >= 3  # the consumer and the two cells
    _assert_ok(run.output())


def test_without_redis_server_on_path_the_demo_uses_fakeredis(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = cli_env(tmp_path) | {"PATH": str(empty)}
    assert shutil.which("redis-server", path=env["PATH"]) is None
    done = run_cli("demo", tmp_path=tmp_path, env=env)  # as a new user runs it
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started an embedded fakeredis TCP server" in done.stdout
    assert "the demo moves a smaller load" in done.stdout
    _assert_ok(done.stdout)


def test_with_redis_server_the_demo_starts_its_own(
    tmp_path: Path, require_redis_server: None
) -> None:
    done = run_cli("demo", *SMALL, tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "started an embedded redis-server" in done.stdout


def test_on_a_cluster(cluster_url: str, cluster_conn: RedisConnection) -> None:
    plan = DemoPlan(records=50, arrays=1, array_mb=1, blob_mb=2, rounds=2, round_mb=1)
    results = run_demo(cluster_url, plan=plan, echo=lambda line: None)
    assert [r.items for r in results] == [51, 2, 4]
    nodes = primaries(cluster_conn)
    assert len(nodes) == 3
    assert not [key for node in nodes for key in scan_keys(cluster_conn, "*", node)]


def test_results_count_every_item_and_time_only_the_transfer(fake_tcp_url: str) -> None:
    progress: list[tuple[str, int, int]] = []
    plan = DemoPlan(records=30, arrays=2, array_mb=1, blob_mb=3, rounds=3, round_mb=1)
    results = run_demo(fake_tcp_url, plan=plan, progress=lambda *a: progress.append(a))
    objects, blob, rounds = results
    assert (objects.items, blob.items, blob.nbytes) == (32, 2, 2 * (3 << 20))
    assert (rounds.items, rounds.nbytes) == (6, 2 * (1 << 20) * 3)
    assert objects.nbytes > 2 << 20
    assert all(r.seconds > 0 and r.mb_per_s > 0 for r in results)
    assert {step for step, _, _ in progress} == {objects.step, blob.step, rounds.step}
    assert (rounds.step, 3, 3) in progress


def test_python_m_framework_and_the_console_script_agree(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("framework")
    assert os.access(script, os.X_OK)
    done = run_cli("--version", tmp_path=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("framework, version ")


def test_run_demo_twice_against_one_redis(redis_url: str, real_conn: RedisConnection) -> None:
    plan = DemoPlan(records=50, arrays=1, array_mb=1, blob_mb=1, rounds=1, round_mb=1)
    for _ in range(2):  # each run has its own names; nothing of the first is reused
        results = run_demo(redis_url, plan=plan, echo=lambda line: None)
        assert [r.items for r in results] == [51, 2, 2]
        assert real_conn.client.dbsize() == 0


def test_as_an_acl_user_with_the_readme_rules_under_its_prefix(
    tmp_path: Path, admin: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "every role's commands\nplus `+scan`" in readme
    commands = {rule for rules in readme_acl_rules().values() for rule in rules}
    commands = {rule for rule in commands if rule.startswith("+")} | {"+scan"}
    admin.acl_setuser(
        "fw-demo",
        enabled=True,
        passwords=[f"+{PASSWORD}"],
        keys=["fw:demo:*"],
        channels=["fw:demo:*"],
        commands=["-@all", *sorted(commands)],
    )
    try:
        url = f"redis://fw-demo:{PASSWORD}@127.0.0.1:{redis_server.ports[0]}/0"
        done = run_cli("demo", *SMALL, tmp_path=tmp_path, url=url)
    finally:
        admin.acl_deluser("fw-demo")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout
    assert admin.dbsize() == 0


def test_make_demo_does_not_echo_a_password_given_in_demo_args(
    tmp_path: Path, user_url: str, admin: redis.Redis
) -> None:
    """make echoes each recipe line before running it; the demo's must not be echoed."""
    env = {**cli_env(tmp_path), "MAKEFLAGS": ""}
    args = " ".join(["--url", f"'{user_url}'", *SMALL])
    done = subprocess.run(
        ["make", "--no-print-directory", "demo", f"DEMO_ARGS={args}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_ok(done.stdout)
    assert PASSWORD not in done.stdout + done.stderr
    assert admin.dbsize() == 0


def test_one_round_is_named_in_the_singular(tmp_path: Path, redis_url: str) -> None:
    """The progress line said "1 rounds"."""
    args = [*SMALL[:-4], "--rounds", "1", "--round-mb", "1"]
    done = run_cli("demo", *args, tmp_path=tmp_path, url=redis_url)
    _assert_ok(done.stdout)
    assert "object protocol (1 round, 2 cells)" in done.stdout

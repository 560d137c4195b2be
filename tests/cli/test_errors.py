"""Every failure of every command: one ``Error:`` line naming the problem, no traceback,
a non-zero exit, and never a password (also one with unencoded ``/``, ``?`` and ``#``)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from framework.embedded import EmbeddedRedis
from tests.cli.conftest import acl_user
from tests.cli.helpers import PASSWORD, Running, finish, run_cli, start_cli, wait_for
from tests.stream.faults import RedisProcess

UNREACHABLE = f"redis://fw-cli:{PASSWORD}@127.0.0.1:1/0"  # port 1: refused at once


def _commands(tmp_path: Path) -> dict[str, list[str]]:
    payload = tmp_path / "payload.bin"
    payload.write_bytes(b"x" * 1000)
    return {
        "check": ["check", "--size-mb", "0.1"],
        "demo": ["demo", "--records", "10", "--arrays", "1", "--blob-mb", "1", "--rounds", "1"],
        "inspect": ["inspect"],
        "send": ["send", str(payload), "--to", "site", "--timeout", "1"],
        "recv": ["recv", "--as", "site", "--out", str(tmp_path / "out"), "--timeout", "1"],
    }


COMMANDS = ["check", "demo", "inspect", "send", "recv"]


def assert_one_error_line(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The run failed with a last stderr line ``Error: ...`` holding every fragment."""
    assert done.returncode != 0, done.stdout + done.stderr
    everything = done.stdout + done.stderr
    assert "Traceback" not in everything
    for secret in (PASSWORD, "pa/ss", "w0rd"):
        assert secret not in everything
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in last, last
    return last


@pytest.mark.parametrize("command", COMMANDS)
def test_unreachable_redis(command: str, tmp_path: Path) -> None:
    done = run_cli(*_commands(tmp_path)[command], tmp_path=tmp_path, url=UNREACHABLE)
    assert_one_error_line(done, "BackendUnavailable", "127.0.0.1:1", "unreachable")
    assert done.returncode == 1
    assert done.stdout == ""  # send printed an empty line: progress bars of no transfer


@pytest.mark.parametrize("command", COMMANDS)
def test_wrong_password_is_not_called_unreachable(
    command: str, tmp_path: Path, user_url: str
) -> None:
    wrong = user_url.replace(PASSWORD, PASSWORD[:-1] + "X")
    done = run_cli(*_commands(tmp_path)[command], tmp_path=tmp_path, url=wrong)
    last = assert_one_error_line(done, "AuthenticationFailed", "refused the credentials")
    assert "unreachable" not in last
    assert PASSWORD[:-1] not in last
    assert done.stdout == ""


@pytest.mark.parametrize("password", ["e", "0", "redis", "p"])
def test_a_short_wrong_password_leaves_the_message_readable(
    password: str, tmp_path: Path, user_url: str
) -> None:
    """Masked wherever it appeared, "e" made "Auth***nticationFail***d" (spelling it out)."""
    host = user_url.rpartition("@")[2]
    done = run_cli("check", tmp_path=tmp_path, url=f"redis://fw-cli:{password}@{host}")
    last = assert_one_error_line(done, "AuthenticationFailed", "refused the credentials")
    assert ":***@127.0.0.1:" in last
    assert f":{password}@" not in last


@pytest.fixture
def password_required(admin: redis.Redis) -> Iterator[None]:
    admin.config_set("requirepass", PASSWORD)
    try:
        yield
    finally:
        admin.execute_command("AUTH", PASSWORD)
        admin.config_set("requirepass", "")


@pytest.mark.parametrize("command", ["check", "inspect", "send"])
def test_missing_password(
    command: str, tmp_path: Path, redis_url: str, password_required: None
) -> None:
    done = run_cli(*_commands(tmp_path)[command], tmp_path=tmp_path, url=redis_url)
    assert_one_error_line(done, "requires a password and none was given")


def test_missing_tls_file_is_named(tmp_path: Path, redis_server: EmbeddedRedis) -> None:
    missing = tmp_path / "no-such-ca.pem"
    url = f"rediss://127.0.0.1:{redis_server.ports[0]}?ssl_ca_certs={missing}"
    done = run_cli("check", tmp_path=tmp_path, url=url)
    assert_one_error_line(done, "ConfigurationError", str(missing), "does not exist")


def test_missing_input_file_is_named(tmp_path: Path, redis_url: str) -> None:
    missing = tmp_path / "nope.bin"
    done = run_cli("send", str(missing), "--to", "x", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 2
    assert_one_error_line(done, str(missing), "does not exist")


def test_never_started_target_cell_fails_after_the_timeout(tmp_path: Path, redis_url: str) -> None:
    done = run_cli(*_commands(tmp_path)["send"], tmp_path=tmp_path, url=redis_url)
    assert_one_error_line(done, "no receiver among site made progress within 1 s", "recv --as")


def test_failed_child_process_reports_its_own_error(
    tmp_path: Path, admin: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    # The producer may write, but the consumer process may not read the topic stream.
    port = redis_server.ports[0]
    with acl_user(admin, port, "no-xread", "+@all", "-xread", "-xreadgroup") as url:
        done = run_cli(*_commands(tmp_path)["demo"], tmp_path=tmp_path, url=url)
    assert_one_error_line(
        done, "object consumer process failed", "PermissionDenied", "XREAD", "'objects'"
    )
    assert admin.dbsize() == 0  # the run's keys are gone despite the failure


@pytest.mark.parametrize(
    ("sig", "status", "said"),
    [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")],
    ids=["ctrl-c", "sigterm"],
)
def test_an_interrupted_demo_exits_after_cleaning_up(
    tmp_path: Path, user_url: str, admin: redis.Redis, sig: int, status: int, said: str
) -> None:
    """SIGTERM (kill, timeout, docker stop) cleans up as Ctrl-C does.

    Before, it killed the demo at once: its keys stayed (7-day inboxes, a 68 MB stream)
    and its cell processes, orphaned, kept writing heartbeats.
    """
    args = ["demo", "--records", "100", "--arrays", "2", "--blob-mb", "256"]
    run = start_cli(*args, tmp_path=tmp_path, url=user_url)
    wait_for(
        lambda: admin.exists(*admin.keys("fw:demo:*:xfer:*:data") or ["-"]) > 0,
        "the demo's byte stream to start",
    )
    children = psutil.Process(run.proc.pid).children(recursive=True)
    assert finish(run.proc, sig) == status
    output = run.output()
    assert said in output
    assert "Traceback" not in output
    assert PASSWORD not in output
    wait_for(lambda: admin.dbsize() == 0, "the demo's keys to be deleted", timeout=10)
    wait_for(lambda: not any(c.is_running() for c in children), "its processes to end")


def test_recv_ctrl_c_exits_130(tmp_path: Path, redis_url: str, admin: redis.Redis) -> None:
    run = start_cli(
        "recv", "--as", "site", "--out", str(tmp_path / "out"), tmp_path=tmp_path, url=redis_url
    )
    wait_for(lambda: bool(admin.keys("fw:cell:{site}:inbox")), "recv to open its inbox")
    assert finish(run.proc, signal.SIGINT) == 130
    assert "Interrupted" in run.output()


def test_recv_says_when_it_cannot_read_redis_and_when_it_can_again(
    tmp_path: Path, reap: Callable[[Running], Running]
) -> None:
    """Without -v, a recv whose Redis went away printed nothing until its timeout."""
    server = RedisProcess(tmp_path).start()
    try:
        recv = reap(start_cli(
            "recv", "--as", "site", "--out", str(tmp_path / "out"), "--count", "1",
            "--timeout", "120", tmp_path=tmp_path, url=server.url,
        ))  # fmt: skip
        wait_for(lambda: "Receiving as cell" in recv.output(), "recv to start")
        server.kill()
        wait_for(lambda: "cannot read from Redis" in recv.output(), "the warning", timeout=30)
        assert "is unreachable" in recv.output()
        server.start()
        wait_for(lambda: "works again" in recv.output(), "the all-clear", timeout=30)
        payload = tmp_path / "payload.bin"
        payload.write_bytes(b"x" * 1000)
        sent = run_cli("send", str(payload), "--to", "site", tmp_path=tmp_path, url=server.url)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert finish(recv.proc) == 0, recv.output()
        assert recv.output().count("cannot read from Redis") == 1  # said once per outage
    finally:
        server.close()


def test_a_send_that_fills_redis_says_what_to_do(
    tmp_path: Path, own_redis: EmbeddedRedis, reap: Callable[[Running], Running]
) -> None:
    """The out-of-memory error was named, but not the way out (``--limit-rate``)."""
    with redis.Redis.from_url(own_redis.url) as admin:
        admin.config_set("maxmemory", 16 * 1024 * 1024)
        admin.config_set("maxmemory-policy", "noeviction")
    payload = tmp_path / "big.bin"
    payload.write_bytes(b"\x00" * (64 << 20))
    # No receiver: the chunks stay in Redis until it is full.
    done = run_cli(
        "send", str(payload), "--to", "site", "--timeout", "30",
        tmp_path=tmp_path, url=own_redis.url,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "OutOfMemoryError" in done.stderr, done.stderr
    assert "Redis is full: raise its maxmemory, or pass --limit-rate" in done.stderr

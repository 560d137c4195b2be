"""The command line: ``python -m framework demo`` through click's runner and as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import framework.embedded as embedded
from framework import __version__
from framework.cli import main

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = "redis://127.0.0.1:1/0"  # port 1: nothing listens, connection refused at once


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("FRAMEWORK_REDIS_URL", raising=False)
    return CliRunner()


def _assert_demo_ok(output: str) -> None:
    assert "write (SET)" in output
    assert "read (GET)" in output
    assert "OK: the object came back equal" in output


def test_demo_against_a_given_server(runner: CliRunner, redis_url: str) -> None:
    result = runner.invoke(
        main, ["check", "--size-mb", "1"], env={"FRAMEWORK_REDIS_URL": redis_url}
    )
    assert result.exit_code == 0, result.output
    assert f"Redis: {redis_url}" in result.output
    assert "throw-away" not in result.output
    _assert_demo_ok(result.output)


def test_url_option_beats_the_environment(runner: CliRunner, fake_tcp_url: str) -> None:
    args = ["check", "--size-mb", "0.5", "--url", fake_tcp_url]
    result = runner.invoke(main, args, env={"FRAMEWORK_REDIS_URL": UNREACHABLE})
    assert result.exit_code == 0, result.output
    _assert_demo_ok(result.output)


def test_demo_on_a_cluster(runner: CliRunner, cluster_url: str) -> None:
    result = runner.invoke(main, ["check", "--size-mb", "1", "--url", cluster_url])
    assert result.exit_code == 0, result.output
    _assert_demo_ok(result.output)


def test_demo_starts_its_own_server(runner: CliRunner, require_redis_server: None) -> None:
    result = runner.invoke(main, ["check", "--size-mb", "1"])
    assert result.exit_code == 0, result.output
    assert "Started a throw-away redis-server" in result.output
    _assert_demo_ok(result.output)


def test_demo_without_redis_server_uses_fakeredis(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded.shutil, "which", lambda name: None)
    result = runner.invoke(main, ["check", "--size-mb", "1"])
    assert result.exit_code == 0, result.output
    assert "Started a throw-away fakeredis" in result.output
    _assert_demo_ok(result.output)


@pytest.mark.parametrize(
    ("url", "error"),
    [(UNREACHABLE, "BackendUnavailable"), ("http://example.com", "ConfigurationError")],
)
def test_demo_failure_is_one_clear_line(runner: CliRunner, url: str, error: str) -> None:
    result = runner.invoke(main, ["check", "--url", url])
    assert result.exit_code == 1
    assert f"Error: {error}: " in result.output
    assert "Traceback" not in result.output


def test_version_and_help(runner: CliRunner) -> None:
    assert __version__ in runner.invoke(main, ["--version"]).output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "demo" in result.output


def _run(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "FRAMEWORK_REDIS_URL"}
    if url is not None:
        env["FRAMEWORK_REDIS_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=env,
        check=False,
    )


def test_python_m_framework_demo(require_redis_server: None) -> None:
    done = _run("check", "--size-mb", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    _assert_demo_ok(done.stdout)


def test_python_m_framework_demo_uses_the_env_url(fake_tcp_url: str) -> None:
    done = _run("check", "--size-mb", "1", url=fake_tcp_url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Redis: {fake_tcp_url}" in done.stdout
    _assert_demo_ok(done.stdout)


def test_python_m_framework_demo_fails_cleanly() -> None:
    done = _run("check", url=UNREACHABLE)
    assert done.returncode == 1
    assert "Error: BackendUnavailable" in done.stderr
    assert "Traceback" not in done.stderr

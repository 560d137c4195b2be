"""The demo (the main job) end to end: object stream and byte stream across processes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from framework.demo import run_demo


@pytest.mark.parametrize("backend", ["real", "fake_tcp", "cluster"])
def test_demo_moves_everything_intact(backend: str, request: pytest.FixtureRequest) -> None:
    fixture = {"real": "redis_url", "fake_tcp": "fake_tcp_url", "cluster": "cluster_url"}[backend]
    url = request.getfixturevalue(fixture)
    lines: list[str] = []
    results = run_demo(url, records=300, blobs=2, blob_mb=2, echo=lines.append)
    assert [(r.step, r.items) for r in results] == [
        ("object stream", 302),
        ("byte stream (blob)", 1),
    ]
    assert results[0].nbytes > 2 * 2 * (1 << 20)
    assert results[1].nbytes == 8 * (1 << 20)
    assert sum("digests match" in line for line in lines) == 2


def test_make_demo_command_starts_its_own_redis(require_redis_server: None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FRAMEWORK_REDIS_URL"}
    args = ["demo", "--records", "100", "--blobs", "1", "--blob-mb", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "framework", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "started an embedded redis-server" in done.stdout
    assert done.stdout.rstrip().endswith("OK: everything sent arrived intact.")


def test_demo_twice_against_one_redis(redis_url: str, real_conn: object) -> None:
    for _ in range(2):  # the second run reuses the topic name of the first
        results = run_demo(redis_url, records=50, blobs=1, blob_mb=1, echo=lambda line: None)
        assert [(r.step, r.items) for r in results] == [
            ("object stream", 51),
            ("byte stream (blob)", 1),
        ]

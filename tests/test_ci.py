"""``.ci/run``: installs redis-server when missing, runs lint and the suite, fails on failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "run"


def test_ci_script_installs_redis_and_runs_lint_and_tests() -> None:
    text = SCRIPT.read_text()
    assert os.access(SCRIPT, os.X_OK)
    assert "set -euo pipefail" in text
    assert "command -v redis-server" in text
    assert "apt-get install -y -qq redis-server redis-tools" in text
    lines = [line.strip() for line in text.splitlines()]
    assert lines.index("make lint") < lines.index("make test")


def test_make_test_fails_when_pytest_collects_nothing() -> None:
    # pytest exits with 5 when no test ran; make (and so .ci/run, under set -e) must fail.
    done = subprocess.run(
        ["make", "test", "PYTEST_ARGS=-q -p no:cacheprovider tests/test_ci.py -k no_such_test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "no tests ran" in done.stdout + done.stderr or "deselected" in done.stdout

"""Every Python block in README.md runs, against servers the test starts.

Redis URLs and ``"localhost", 6379``-style host and port arguments are pointed at the session's
redis-server; credentials in a URL are created on it first. The "Testing your own
code" block runs as a user's test file, under pytest, in a fresh directory (so only
the installed plugin provides its fixtures). The store contract example imports the
"Write your own store" block as ``my_package.sqlite_store``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import unquote

import pytest
import redis

from framework.embedded import EmbeddedRedis
from framework.store import registered_stores, unregister_store

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
URL = re.compile(r"(?P<scheme>rediss?|redis\+cluster)://(?:(?P<auth>[^@\s\"']*)@)?[\w.\-]+:\d+")
HOST_PORT = re.compile(r'"(?:localhost|redis)", 6379')


def _blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text())


BLOCKS = _blocks()


def _label(block: str) -> str:
    first = next(line for line in block.splitlines() if line.strip() and "import" not in line)
    return first.strip()[:40]


@contextmanager
def _credentials(admin: redis.Redis, code: str) -> Iterator[None]:
    """Create the users (or the default user's password) that the block's URLs carry."""
    with ExitStack() as undo:
        for match in URL.finditer(code):
            user, _, password = (match.group("auth") or "").partition(":")
            if not password:
                continue
            if user:
                admin.acl_setuser(
                    unquote(user),
                    enabled=True,
                    passwords=[f"+{unquote(password)}"],
                    keys=["*"],
                    channels=["*"],
                    commands=["+@all"],
                )
                undo.callback(admin.acl_deluser, unquote(user))
            else:
                admin.config_set("requirepass", unquote(password))
                undo.callback(admin.config_set, "requirepass", "")
                undo.callback(admin.execute_command, "AUTH", unquote(password))
        yield


def _localize(code: str, port: int) -> str:
    code = URL.sub(
        lambda m: f"redis://{m.group('auth') + '@' if m.group('auth') else ''}127.0.0.1:{port}",
        code,
    )
    return HOST_PORT.sub(f'"127.0.0.1", {port}', code)


def test_the_readme_has_python_blocks() -> None:
    assert len(BLOCKS) >= 10
    assert sum("def test_" in block for block in BLOCKS) >= 1


# ProxyStore's own stream package warns that it is experimental when imported.
@pytest.mark.filterwarnings("ignore:Streaming is an experimental feature")
@pytest.mark.parametrize("block", BLOCKS, ids=[_label(b) for b in BLOCKS])
def test_block_runs(
    block: str,
    redis_server: EmbeddedRedis,
    real_conn: object,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = redis_server.ports[0]
    code = _localize(block, port)
    if "def test_" in code and "fw_" in code:
        _run_as_a_users_test_file(code, tmp_path)
        return
    package = tmp_path / "my_package"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sqlite_store.py").write_text(_sqlite_block())
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with redis.Redis(port=port) as admin, _credentials(admin, code):
        try:
            exec(compile(code, "README.md", "exec"), {"__name__": "readme_block"})
        finally:
            for store in registered_stores():  # blocks that register stores end the process
                unregister_store(store)
                store.close()
            sys.modules.pop("my_package.sqlite_store", None)
            sys.modules.pop("my_package", None)
        assert not admin.keys("fw:xfer:*"), "a byte-stream transfer was left unfinished"


def _sqlite_block() -> str:
    (block,) = [b for b in BLOCKS if "class SqliteStore(BaseStore)" in b]
    return block


def _run_as_a_users_test_file(code: str, tmp_path: Path) -> None:
    (tmp_path / "test_users_suite.py").write_text(code)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_users_suite.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout
    assert "skipped" not in done.stdout

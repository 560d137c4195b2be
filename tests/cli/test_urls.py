"""URLs the CLI cannot use end with one ``Error:`` line naming the problem; no password
shows, also from a URL too malformed to parse, in the environment, or in ``-vv`` logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.embedded import EmbeddedRedis
from tests.cli.helpers import cli_env, run_cli
from tests.cli.test_errors import COMMANDS, _commands, assert_one_error_line

#: A password easy to spot in any output, in every form below.
SECRET = "Zq8-secret-Wv4"

# Port 1 refuses at once: nothing here may reach a real Redis (least of all 6379).
MALFORMED = {
    "one-slash": f"redis:/:{SECRET}@127.0.0.1:1/0",
    "no-colon": f"redis//fw:{SECRET}@127.0.0.1:1/0",
    "no-slashes": f"redis:fw:{SECRET}@127.0.0.1:1",
    "no-scheme": f"{SECRET}@127.0.0.1:1",
    "no-scheme-no-user": f":{SECRET}@127.0.0.1:1",
    "three-slashes": f"redis:///fw:{SECRET}@127.0.0.1:1/0",
    "user-in-path": f"redis:/fw:{SECRET}@127.0.0.1:1/0",
    "port-too-big": f"redis://fw:{SECRET}@127.0.0.1:99999/0",
    "broken-ipv6": f"redis://fw:{SECRET}@[::1/0",
    "host-forgotten": f"redis://fw:{SECRET}",
    "fragment": f"redis://fw:{SECRET}@127.0.0.1:1/0#x",
    "upper-case-scheme": f"REDIS://fw:{SECRET}@127.0.0.1:notaport",
}


def _no_secret(text: str) -> None:
    for piece in (SECRET, SECRET[:8], SECRET[-8:]):
        assert piece not in text, text


@pytest.mark.parametrize("url", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_url_never_shows_its_password(url: str, tmp_path: Path) -> None:
    done = run_cli("-vv", "check", "--url", url, tmp_path=tmp_path)
    _no_secret(done.stdout + done.stderr)  # -vv: log lines and tracebacks too
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: "), done.stderr


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("form", ["one-slash", "no-scheme", "host-forgotten"])
def test_malformed_url_in_the_environment_never_shows_its_password(
    command: str, form: str, tmp_path: Path
) -> None:
    args = _commands(tmp_path)[command]
    done = run_cli(*args, tmp_path=tmp_path, env=cli_env(tmp_path, MALFORMED[form]))
    _no_secret(done.stdout + done.stderr)
    assert done.returncode == 1, done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_infinite_socket_timeout_is_a_one_line_error(
    command: str, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    url = f"redis://127.0.0.1:{redis_server.ports[0]}/0?socket_timeout=inf"
    done = run_cli(*_commands(tmp_path)[command], tmp_path=tmp_path, url=url)
    assert_one_error_line(done, "socket_timeout", "finite number")
    assert done.returncode == 1


@pytest.mark.parametrize(
    ("option", "named", "why"),
    [
        ("connect_timeout=inf", "connect_timeout", "finite number"),
        ("socket_timeout=1e10", "socket_timeout", "less than or equal to 86400"),
    ],
)
def test_unusable_timeouts_name_their_option(
    option: str, named: str, why: str, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    url = f"redis://127.0.0.1:{redis_server.ports[0]}/0?{option}"
    done = run_cli("check", tmp_path=tmp_path, url=url)
    assert_one_error_line(done, named, why)

"""The README's "Porting from ProxyStore" example: both columns run, with the same output.

The right column must be the left one with ``proxystore`` replaced by ``framework``.
Each column runs in its own interpreter (its own store registry) against the test's
Redis; the left one with ProxyStore 1.1 itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
ADDRESS_LINE = 'HOST, PORT = "localhost", 6379'


def _columns() -> tuple[str, str]:
    text = README.read_text()
    section = text.split("### Porting from ProxyStore", 1)[1].split("\n### ", 1)[0]
    table = section.split("<table>", 1)[1].split("</table>", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", table, flags=re.DOTALL)
    assert len(blocks) == 2, "the porting table has a ProxyStore and a framework column"
    return blocks[0], blocks[1]


def _run(code: str, host: str, port: int) -> str:
    assert ADDRESS_LINE in code
    script = code.replace(ADDRESS_LINE, f"HOST, PORT = {host!r}, {port}")
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_columns_differ_only_in_imports() -> None:
    proxystore_column, framework_column = _columns()
    assert "import" in framework_column
    assert framework_column == proxystore_column.replace("proxystore", "framework")


def test_the_framework_column_runs(redis_address: tuple[str, int]) -> None:
    assert _run(_columns()[1], *redis_address) == f"{sum(range(100))}\n"


def test_the_proxystore_column_runs_the_same(redis_address: tuple[str, int]) -> None:
    import proxystore  # in the dev extra: the left column runs, never skipped

    assert proxystore.__version__.startswith("1.1")
    proxystore_column, framework_column = _columns()
    assert _run(proxystore_column, *redis_address) == _run(framework_column, *redis_address)

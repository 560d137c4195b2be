"""The README's object-protocol example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## Object protocol: `StreamableEngine`") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "the object-protocol section has no Python block"
    return match.group(1)


@pytest.mark.usefixtures("require_redis_server")
def test_the_readme_example_streams_weights_round_by_round(
    capsys: pytest.CaptureFixture[str],
) -> None:
    exec(compile(_example(), "README.md", "exec"), {"__name__": "readme_example"})
    out = capsys.readouterr().out
    for round_ in range(3):
        for site in ("site-1", "site-2"):
            assert f"round {round_}: {site} OK" in out
    assert "round 2: site-2 OK norm=724" in out
    assert out.count("finalized with OK") == 2

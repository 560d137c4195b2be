"""compose.yaml: Redis with a healthcheck, and the demo pointed at it once it is healthy.

No container engine runs where the suite runs, so the file's structure is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from framework.settings import ENV_VAR, RedisSettings

COMPOSE = Path(__file__).resolve().parents[1] / "compose.yaml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_redis_service_has_a_healthcheck() -> None:
    redis = _services()["redis"]
    assert redis["image"].startswith("redis:7")
    check = redis["healthcheck"]
    assert check["test"][:2] == ["CMD", "redis-cli"]
    assert "ping" in check["test"]
    assert check["retries"] >= 3


def test_demo_waits_for_a_healthy_redis_and_uses_it() -> None:
    services = _services()
    demo = services["demo"]
    assert demo["image"].startswith("python:3.1")
    assert demo["depends_on"] == {"redis": {"condition": "service_healthy"}}
    settings = RedisSettings.from_url(demo["environment"][ENV_VAR])
    assert settings.host == "redis"  # the service name
    assert settings.port == 6379
    assert set(services) == {"redis", "demo"}


def test_demo_installs_the_checkout_and_runs_the_console_script() -> None:
    demo = _services()["demo"]
    source = demo["volumes"][0].split(":")
    assert source[0] == "."
    command = demo["command"][-1]
    assert f"pip install --quiet --no-cache-dir {source[1]}" in command
    assert command.endswith("exec framework demo")
    assert demo["working_dir"] != source[1]  # the installed package runs, not the sources

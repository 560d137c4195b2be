from __future__ import annotations

from typing import Any

import pytest

from framework.exceptions import ConfigurationError
from framework.store import StoreConfig


def test_round_trips_through_json() -> None:
    config = StoreConfig(kind="redis", name="r", options={"url": "redis://h:1/0", "ttl": None})
    assert StoreConfig.from_json(config.model_dump_json()) == config
    assert StoreConfig.from_json(config.model_dump_json().encode()) == config


def test_is_frozen_and_strict() -> None:
    config = StoreConfig(kind="memory", name="m")
    with pytest.raises(Exception, match="frozen"):
        config.name = "other"  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="extra"):
        StoreConfig(kind="memory", name="m", extra=1)


@pytest.mark.parametrize(
    "options",
    [
        {"password": "x"},
        {"Secret": "x"},
        {"url": "redis://user:pw@host:6379/0"},
        {"nested": {"token": "t"}},
        {"nested": {"url": "rediss://:pw@host"}},
        # Accepted before: names that hold a secret's word, passwords with "/", "?", "#".
        {"api_token": "a"},
        {"redis_password": "a"},
        {"passwd": "a"},
        {"secret_key": "a"},
        {"accessToken": "a"},
        {"url": "redis://:p/w?x@127.0.0.1:16550"},
        {"url": "redis://user:p#w@h:1"},
        {"url": "redis://h:1/0?password=hunter2"},
        {"callable": print},
        {"nan": float("nan")},
    ],
)
def test_refuses_secrets_and_non_json(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="Invalid store config"):
        StoreConfig(kind="redis", name="r", options=options)


@pytest.mark.parametrize(
    "options",
    [
        {"url": "redis://alice@host:6379/0"},  # a user name is no secret
        {"url": "redis://host:6379/0", "prefix": "fw", "signed": True},
        {"directory": "/var/lib/objects", "part_size": 1024},
    ],
)
def test_accepts_what_is_not_a_secret(options: dict[str, Any]) -> None:
    assert StoreConfig(kind="redis", name="r", options=options).options == options


@pytest.mark.parametrize("kind", ["", "os.system; rm", "a b", "../x"])
def test_refuses_odd_kind_names(kind: str) -> None:
    with pytest.raises(ConfigurationError):
        StoreConfig(kind=kind, name="r")


@pytest.mark.parametrize("text", ["not json", "[1]", '{"kind": "redis"}'])
def test_from_json_errors_are_configuration_errors(text: str) -> None:
    with pytest.raises(ConfigurationError):
        StoreConfig.from_json(text)

"""``StoreConfig``: what another process needs to rebuild a store (never a secret).

A config travels inside object-stream events and pickled proxies, so anyone who can
read Redis can read it. It therefore holds only a registry kind, a name and plain
JSON options; passwords and signing secrets stay in each process's own environment.
This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from framework._url_secrets import carries_password
from framework.exceptions import ConfigurationError

__all__ = ["StoreConfig"]

#: Option names a config must never carry (it is readable by anyone who can read Redis):
#: any that holds one of these words, as password, redis_password, api_token, passwd,
#: secret_key or accessToken.
_SECRET_NAME = re.compile(r"passw(?:or)?d|pwd|secret|token|credential|api_?key|private_?key", re.I)


class StoreConfig(BaseModel):
    """Kind, name and options of a store: JSON-serialisable and free of secrets.

    ``Store.from_config(store.config())`` rebuilds an equivalent store, also in another
    process; :func:`framework.store.registry.get_or_create_store` picks the class by
    :attr:`kind` among registered kinds only.

    Attributes:
        kind: Registry kind, e.g. ``"redis"``, ``"memory"``, ``"file"`` or an
            entry-point name of the ``framework.stores`` group.
        name: Name of the store (also its registry name).
        options: Keyword arguments of the store's constructor, as plain JSON values.

    Raises:
        ConfigurationError: If a field is invalid, an option is not JSON or looks
            like a secret (a password, token, or a URL with a password in it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")
    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(f"Invalid store config: {_describe(exc)}") from exc

    @field_validator("options")
    @classmethod
    def _plain_and_public(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Reject options that are not JSON or that would leak a secret."""
        try:
            json.dumps(options, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"options must be plain JSON values ({exc}).") from None
        _check_public(options)
        return options

    @classmethod
    def from_json(cls, text: str | bytes) -> StoreConfig:
        """Parse a config from JSON (as produced by ``model_dump_json()``).

        Args:
            text: The JSON document.

        Returns:
            The validated config.

        Raises:
            ConfigurationError: If the JSON is malformed or the config invalid.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigurationError(f"A store config is not valid JSON: {exc}.") from exc
        if not isinstance(data, dict):
            raise ConfigurationError("A store config must be a JSON object.")
        return cls(**data)


def _check_public(options: Mapping[str, Any]) -> None:
    for name, value in options.items():
        if _SECRET_NAME.search(name):
            raise ValueError(f"option {name!r} looks like a secret; configs must not carry one.")
        if isinstance(value, str) and carries_password(value):
            raise ValueError(f"option {name!r} is a URL with a password; drop the password.")
        if isinstance(value, Mapping):
            _check_public(value)


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        message = str(err["msg"]).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems).rstrip(".") + "."

"""Store options: TTL and argument checks, configs turned back into constructor arguments (pure)."""

from __future__ import annotations

import math
import os
from typing import Any, TypeVar

from framework.exceptions import ConfigurationError
from framework.store.config import StoreConfig

__all__ = [
    "CUSTOM_SERIALIZER",
    "SECRET_ENV_VAR",
    "checked_ttl",
    "construct",
    "constructor_options",
    "not_text",
]

#: Environment variable holding the shared HMAC secret (UTF-8) used by ``from_config``
#: when a config says its store signs objects. Configs never carry the secret itself.
SECRET_ENV_VAR = "FRAMEWORK_SECRET"  # noqa: S105 - the variable name, not a secret

#: The ``serializer`` option of a store with custom functions: a config cannot carry them.
CUSTOM_SERIALIZER = "custom"

_T = TypeVar("_T")


def construct(cls: type[_T], config: StoreConfig, **extra: Any) -> _T:
    """``cls(config.name, **options, **extra)``, or a ``ConfigurationError`` naming the misfit.

    ``extra``: arguments a class passes when it is rebuilt from a config, besides the
    config's own options.
    """
    try:
        return cls(config.name, **constructor_options(config), **extra)  # type: ignore[call-arg]
    except TypeError as exc:  # an option the constructor does not take
        raise ConfigurationError(
            f"Config of store {config.name!r} (kind {config.kind!r}) does not fit "
            f"{cls.__name__}: {exc}"
        ) from exc


def checked_ttl(ttl: float | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"ttl must be a number of seconds or None, got {ttl!r}.")
    if not (math.isfinite(ttl) and ttl > 0):
        raise ConfigurationError(f"ttl must be a positive, finite number of seconds, got {ttl!r}.")
    return float(ttl)


def constructor_options(config: StoreConfig) -> dict[str, Any]:
    """Turn config options into constructor kwargs, fetching the secret if one is needed."""
    options = dict(config.options)
    if options.get("serializer") == CUSTOM_SERIALIZER:
        raise ConfigurationError(
            f"Store {config.name!r} uses custom serializer functions, which a config cannot "
            "carry: register a store built with the same functions in this process."
        )
    if options.pop("signed", False):
        secret = os.environ.get(SECRET_ENV_VAR, "")
        if not secret:
            raise ConfigurationError(
                f"Store {config.name!r} signs its objects, but {SECRET_ENV_VAR} is not set in "
                "this process: set it, or register a store built with the secret."
            )
        options["secret"] = secret.encode()
    return options


def not_text(method: str, what: str, value: Any) -> None:
    """A str or bytes given for a sequence of items is a mistake, not items of one char."""
    if isinstance(value, str | bytes):
        raise TypeError(
            f"{method} takes a list of {what}, not a {type(value).__name__} "
            f"({value!r:.40}); wrap a single one in a list."
        )

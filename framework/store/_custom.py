"""ProxyStore's custom serializer and deserializer functions, checked and applied (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from framework.exceptions import ConfigurationError, SerializationError
from framework.store.protocols import Deserializer, Serializer

__all__ = ["custom_bytes", "custom_functions", "custom_object"]


def custom_functions(
    serializer: str | Serializer | None, deserializer: Deserializer | None
) -> tuple[Serializer | None, Deserializer | None]:
    """The custom serializer functions of a store, checked."""
    custom = serializer if callable(serializer) else None
    if serializer is not None and custom is None and not isinstance(serializer, str):
        raise ConfigurationError(
            f"serializer must be a serializer name or a function, got {serializer!r}."
        )
    if deserializer is not None and not callable(deserializer):
        raise ConfigurationError(f"deserializer must be a function, got {deserializer!r}.")
    return custom, deserializer


def custom_bytes(serializer: Callable[[Any], Any], obj: Any) -> bytes:
    """``serializer(obj)`` as ``bytes``, or a clear error."""
    try:
        data = serializer(obj)
    except Exception as exc:
        msg = f"The custom serializer failed on a {type(obj).__name__}: {exc}"
        raise SerializationError(msg) from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"A custom serializer must return bytes, got {type(data).__name__} "
            f"for a {type(obj).__name__}."
        )
    return bytes(data)


def custom_object(deserializer: Callable[[bytes], Any], data: Any, key: str) -> Any:
    """``deserializer(data)``, or a clear error naming the key."""
    try:
        return deserializer(data)
    except Exception as exc:
        msg = f"The custom deserializer failed on object {key!r}: {exc}"
        raise SerializationError(msg) from exc

"""Checking a wait's timeout argument (pure): one rule and one message for every reader."""

from __future__ import annotations

import math
import numbers
from typing import Any

from framework.exceptions import ConfigurationError

__all__ = ["checked_timeout"]


def checked_timeout(timeout: Any, what: str) -> float | None:
    """Return ``timeout`` if it is a wait's timeout: seconds (>= 0), or None for no limit.

    Args:
        timeout: The argument.
        what: Who takes it, for the message (``"RedisSubscriber"``).

    Raises:
        ConfigurationError: If it is not a finite number of seconds >= 0 (booleans,
            strings and NaN included) nor None.
    """
    if timeout is None:
        return None
    # numbers.Real: numpy's numbers are seconds too; a bool is a mistake, not 0 or 1 s.
    number = isinstance(timeout, numbers.Real) and not isinstance(timeout, bool)
    if not number or not math.isfinite(timeout) or timeout < 0:
        raise ConfigurationError(
            f"{what}: timeout must be a number of seconds >= 0, or None to wait without "
            f"a limit; got {timeout!r:.80}."
        )
    return float(timeout)

"""Checking a wait's timeout argument (pure): one rule and one message for every reader."""

from __future__ import annotations

import math
import numbers
from typing import Any

from framework.exceptions import ConfigurationError

__all__ = ["as_seconds", "checked_timeout"]


def as_seconds(value: Any) -> float:
    """``value`` as a float: NaN if it is not a number, infinite if too large for a float.

    ``numbers.Real``: numpy's integers and floats are numbers of seconds too; a bool is a
    mistake, not 0 or 1 s.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an int beyond a float's range
        return math.inf


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
    seconds = as_seconds(timeout)
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(
            f"{what}: timeout must be a number of seconds >= 0, or None to wait without "
            f"a limit; got {timeout!r:.80}."
        )
    return seconds

"""Stream filters: callables over event metadata that return True to drop an object.

Any ``Callable[[dict[str, Any]], bool]`` is a filter; these two are provided
(ProxyStore's names and meanings). Producers apply a filter before batching;
consumers apply it to received events and evict a dropped object's stored copy
when its ``evict`` flag is set.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from framework.exceptions import ConfigurationError

__all__ = ["Filter", "NullFilter", "SamplingFilter"]

#: A filter: called with an object's metadata, returns True to drop the object.
Filter = Callable[[dict[str, Any]], bool]


class NullFilter:
    """Filter that never drops an object."""

    def __call__(self, metadata: dict[str, Any]) -> bool:
        """Keep every object.

        Args:
            metadata: The object's metadata (ignored).

        Returns:
            Always False.
        """
        return False


class SamplingFilter:
    """Filter that drops objects at random.

    Args:
        p: Probability that an object is dropped, in ``[0, 1]``.

    Raises:
        ConfigurationError: If ``p`` is outside ``[0, 1]`` (also a ``ValueError``).
    """

    def __init__(self, p: float) -> None:
        if not 0 <= p <= 1:
            raise ConfigurationError(f"Filter probability p must be in [0, 1], got p={p}.")
        self._p = p

    def __call__(self, metadata: dict[str, Any]) -> bool:
        """Drop the object with probability ``p``.

        Args:
            metadata: The object's metadata (ignored).

        Returns:
            True (drop) with probability ``p``.
        """
        return random.random() < self._p

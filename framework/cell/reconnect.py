"""Riding out dropped connections: retry a transfer's Redis call until the idle timeout.

A transfer keeps its position on both sides (the next entry id to read, the last chunk
written or acknowledged), and every call it makes is safe to repeat: chunk frames have
explicit ids, reads resume after the last id seen, and a repeated ack only restates a
position. So when Redis drops a connection (``CLIENT KILL``, a restart, a network blip)
the call is simply made again on a fresh connection, with a short backoff, until the
transfer's idle timeout has passed. Errors that Redis *answered* (out of memory, wrong
type...) are not connection problems and pass through at once. No Redis import here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from framework.exceptions import BackendTimeout, BackendUnavailable

__all__ = ["with_reconnect"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: First pause (s) before a retry; doubles up to :data:`_BACKOFF_CAP`.
_BACKOFF = 0.05
_BACKOFF_CAP = 1.0


def with_reconnect(
    call: Callable[[], _T], *, patience: float, stop: threading.Event, what: str
) -> _T:
    """Run ``call``; after a dropped connection, run it again until ``patience`` runs out.

    Args:
        call: A repeatable Redis operation.
        patience: Seconds of failures tolerated (the transfer's idle timeout).
        stop: When set, the last error is raised at once (the owner is closing).
        what: Names the operation in log messages.

    Returns:
        What ``call`` returned.

    Raises:
        BackendUnavailable: Redis stayed unreachable for ``patience`` seconds.
        BackendTimeout: Redis stayed unresponsive for ``patience`` seconds.
        FrameworkError: Whatever else ``call`` raised, unchanged.
    """
    deadline = time.monotonic() + patience
    pause = _BACKOFF
    while True:
        try:
            return call()
        except (BackendUnavailable, BackendTimeout) as exc:
            if time.monotonic() + pause > deadline or stop.is_set():
                raise
            logger.info("Redis dropped the connection while %s (%s); reconnecting.", what, exc)
        stop.wait(pause)
        pause = min(pause * 2, _BACKOFF_CAP)

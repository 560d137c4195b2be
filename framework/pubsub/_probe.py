"""When to probe a silent pub/sub connection with a PING, and when to give it up.

A subscription's connection only ever receives. If its peer stops answering without
closing it (a hung node, a network partition, a NAT or firewall that dropped the idle
connection), reads just find nothing, and messages published meanwhile are lost in
silence, forever. So a connection silent for :data:`PROBE_AFTER_S` is sent a PING;
one whose PING is not answered within its socket timeout, while reads keep finding
nothing, counts as dead: the subscriber drops it and subscribes again, and reports the
interruption like any other.

Anything received counts as an answer, so a busy connection is never probed, and a
backlog still waiting in the socket is read (and counts) before the silence does.
Pure logic: no Redis I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

__all__ = ["PROBE_AFTER_S", "PROBE_MESSAGE", "Probe"]

#: Seconds of silence after which a subscription's connection is sent a PING.
PROBE_AFTER_S: Final = 1.0
#: The PING's message: a reply carrying it is the subscriber's own, not an application's.
PROBE_MESSAGE: Final = "fw-probe"


class Probe:
    """The liveness of one subscription connection.

    Args:
        timeout: Seconds a PING may go unanswered, while reads find nothing, before
            the connection counts as dead.
        now: The monotonic time the connection was opened (as if heard then).
    """

    def __init__(self, timeout: float, now: float) -> None:
        self.timeout = timeout
        self._heard = now
        self._sent: float | None = None

    def heard(self, now: float) -> None:
        """Something arrived on the connection: it is alive."""
        self._heard = now
        self._sent = None

    def due(self, now: float) -> bool:
        """Whether to send a PING now (silent for :data:`PROBE_AFTER_S`, none pending)."""
        return self._sent is None and now - self._heard >= PROBE_AFTER_S

    def sent(self, now: float) -> None:
        """A PING was sent."""
        self._sent = now

    def dead(self, now: float) -> bool:
        """Whether the pending PING went unanswered for ``timeout``.

        Call it after a read that found nothing: the answer is not waiting in the socket.
        """
        return self._sent is not None and now - self._sent > self.timeout

    def observe(self, got: bool, ping: Callable[[], object], now: float | None = None) -> bool:
        """Note a read's outcome; ``ping()`` the connection when due.

        Args:
            got: Whether the read returned anything.
            ping: Sends a PING on the connection.
            now: The monotonic time of the read (now by default).

        Returns:
            True if the connection counts as dead (the probe then starts afresh, for
            the connection that replaces it).
        """
        now = time.monotonic() if now is None else now
        if got:
            self.heard(now)
        elif self.dead(now):
            self.heard(now)
            return True
        elif self.due(now):
            ping()
            self.sent(now)
        return False

    @property
    def failure(self) -> str:
        """Why a dead connection was given up, for error messages."""
        return f"no answer to a PING within {self.timeout} s"

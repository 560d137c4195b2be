"""How long a subscriber has found Redis unreachable, against its ``max_outage``.

Every subscriber rides out an unreachable Redis the same way: each failed attempt is
noted, the read raises once the failures have lasted ``max_outage`` seconds (then the
count starts afresh, and the subscriber goes on trying), and a successful attempt ends
the outage. A receive timeout that ends during an outage says so (:func:`outage_note`).
Pure logic: no Redis I/O.
"""

from __future__ import annotations

import time

__all__ = ["READ_GRACE", "Outage", "outage_note", "unanswered_note"]


#: Seconds a read with a caller's deadline waits for its reply past the end of its BLOCK
#: before it counts Redis as not answering (frozen: paused, stopped, swapping).
READ_GRACE = 1.0


class Outage:
    """The current outage of one subscriber, if any.

    Args:
        limit: Seconds of failed attempts after which :meth:`failed` says to raise.

    Attributes:
        since: Monotonic time of the outage's first failed attempt; None while up.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.since: float | None = None

    def failed(self) -> bool:
        """Note a failed attempt; True once they have lasted ``limit`` (then afresh)."""
        now = time.monotonic()
        self.since = self.since or now
        if now - self.since < self.limit:
            return False
        self.since = None
        return True

    def ended(self) -> None:
        """An attempt succeeded: Redis is reachable again."""
        self.since = None


def outage_note(since: float | None) -> str:
    """What a ``ReceiveTimeout`` adds while Redis is unreachable (since ``since``).

    A wait that ends during an outage did not find the topic quiet: it could not look.
    """
    if since is None:
        return ""
    return (
        f" Redis has been unreachable for the last {time.monotonic() - since:.1f} s "
        "(the subscriber keeps trying, for max_outage)."
    )


def unanswered_note(error: Exception | None) -> str:
    """What a ``ReceiveTimeout`` adds when Redis did not answer the last read in time."""
    if error is None:
        return ""
    return f" Redis did not answer the last read in time ({error})."

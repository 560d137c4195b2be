"""Logging a failure that a background loop meets again and again, without flooding the log.

A loop that retries after an error Redis *answers* (``WRONGTYPE`` on a key something
else overwrote, ``NOPERM``, out of memory) meets the same error on every turn, several
times a second. :class:`RepeatedFailure` logs the first one (a Redis error in one line,
anything else with its traceback), then a one-line reminder at most every
:data:`REMIND_S` seconds while it lasts, and a line when the loop works again. Pure
logic: no I/O besides the logger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from framework._core_errors import BackendError

__all__ = ["REMIND_S", "RepeatedFailure"]

#: Seconds between reminders of a failure that goes on.
REMIND_S = 30.0


class RepeatedFailure:
    """Logs the failures of one background loop (or of several threads doing one job).

    Args:
        logger: Where to log.
        what: What the loop does, for the messages ("Reading the inbox of cell 'b'").
        clock: Monotonic clock (tests pass their own).
    """

    def __init__(
        self, logger: logging.Logger, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.logger = logger
        self.what = what
        self._clock = clock
        self._failing: str | None = None
        self._count = 0
        self._reminded = 0.0
        self._lock = threading.Lock()

    @property
    def failing(self) -> str | None:
        """The failure that goes on (``"Type: message"``), or None while the loop works."""
        return self._failing

    def failed(self, exc: BaseException) -> None:
        """Log ``exc``: in full when it is new, else as a reminder now and then."""
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._log(exc, text, self._clock())

    def _log(self, exc: BaseException, text: str, now: float) -> None:
        if text != self._failing:
            self._failing, self._count, self._reminded = text, 1, now
            if isinstance(exc, BackendError):
                # Redis's answer, or its silence, already says it all: one line (a
                # restart logged a 40-line traceback from every process).
                self.logger.warning("%s failed; retrying: %s", self.what, text)
                self.logger.debug("%s failed:", self.what, exc_info=exc)
            else:  # a defect: where it happened matters
                self.logger.warning("%s failed; retrying.", self.what, exc_info=exc)
            return
        self._count += 1
        if now - self._reminded >= REMIND_S:
            self._reminded = now
            self.logger.warning(
                "%s still fails (%d times so far): %s", self.what, self._count, text
            )

    def succeeded(self) -> None:
        """The loop worked again: say so once, if it had been failing."""
        if self._failing is None:  # the usual case, without taking the lock
            return
        with self._lock:
            if self._failing is None:
                return
            self.logger.warning("%s works again after %d failures.", self.what, self._count)
            self._failing, self._count = None, 0

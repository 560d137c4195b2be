"""Is Redis still answering? A PING on a connection of its own, once a second or faster.

``send --timeout S`` promises to give up when nothing moved for ``S`` seconds. A frozen
Redis (stopped, swapping, a network that drops packets without a reset) moves nothing,
but each command to it waits out its socket timeout and redis-py's retries, and the
cell's best-effort notices and clean-up wait again after that: the first probe took
well over a minute to fail with ``--timeout 20``. The command's own thread therefore
never talks to Redis; it watches this probe and stops waiting once Redis has been
silent for ``S`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time

from framework._core_errors import reworded
from framework.connection import RedisConnection
from framework.exceptions import BackendError, BackendTimeout, BackendUnavailable, FrameworkError
from framework.settings import RedisSettings

__all__ = ["RedisWatch"]

logger = logging.getLogger(__name__)

#: Longest pause (s) between two probes.
MAX_INTERVAL = 1.0


class RedisWatch:
    """Pings Redis in a daemon thread and knows how long it has been silent.

    Args:
        settings: Where Redis is; the probe's socket timeouts are capped at ``timeout``.
        timeout: Seconds of silence the caller tolerates.

    Example:
        with RedisWatch(settings, 20.0) as watch:
            ...
            if watch.silent_for() > 20.0:
                raise watch.error("Try again later.")
    """

    def __init__(self, settings: RedisSettings, timeout: float) -> None:
        self.timeout = timeout
        capped = {
            "socket_timeout": min(settings.socket_timeout, timeout),
            "connect_timeout": min(settings.connect_timeout, timeout),
            "retries": 0,  # a retry would only hide the silence this measures
        }
        # A connection of its own: a PING must not queue behind a transfer's big write.
        self._conn = RedisConnection(settings.model_copy(update=capped))
        self._url = settings.url()  # as the user gave it, without the probe's caps
        self._interval = min(MAX_INTERVAL, timeout / 4)
        self._last_answer = time.monotonic()
        self._last_error: FrameworkError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fw-cli-watch", daemon=True)

    def __enter__(self) -> RedisWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop probing; the connection is closed unless a probe is still waiting on it.

        A probe stuck on a frozen Redis ends with its socket timeout; the thread is a
        daemon, so it never holds up the exit.
        """
        self._stop.set()
        self._thread.join(self._interval)
        if not self._thread.is_alive():
            self._conn.close()

    def check(self) -> None:
        """PING once now, within the capped timeouts; the answer resets :meth:`silent_for`.

        Raises:
            BackendError: Redis is unreachable, refused the credentials, or did not answer.
        """
        try:
            self._conn.ping()
        except FrameworkError as exc:
            # Named by the URL the user gave, not the probe's (its timeouts are capped).
            raise reworded(exc, str(exc).replace(self._conn.url(), self._url)) from exc.__cause__
        self._last_answer = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since Redis last answered a PING (or since the watch was made)."""
        return time.monotonic() - self._last_answer

    def error(self, hint: str = "") -> BackendError:
        """The error to report once the silence lasted too long.

        Args:
            hint: A sentence to end the message with (what the user can do now).

        Returns:
            ``BackendUnavailable`` when the last probe was refused, else ``BackendTimeout``.
        """
        last = self._last_error
        kind = BackendUnavailable if isinstance(last, BackendUnavailable) else BackendTimeout
        because = f" The last PING failed: {last}" if last is not None else ""
        return kind(
            f"Redis at {self._url} did not answer for {self.silent_for():.0f} s "
            f"(--timeout {self.timeout:g}).{because}{' ' + hint if hint else ''}",
            command="PING",
        )

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._conn.ping()
            except FrameworkError as exc:  # the silence is the report; the error says why
                logger.debug("Redis did not answer a PING: %s", exc)
                self._last_error = exc
            except Exception:  # thread boundary: a broken probe counts as silence
                logger.exception("The Redis probe failed unexpectedly.")
            else:
                self._last_answer = time.monotonic()

"""A producer's heartbeats on its open topics, sent by a thread of its own.

A consumer hears nothing else from a producer that was killed: without heartbeats it
would wait forever for the end of its topic. A topic that has had nothing published for
``interval`` seconds gets a heartbeat. On pub/sub it carries the sequence number that
follows the last message *sent*, so a heartbeat that overtakes a batch being published
is a duplicate to consumers, never a gap; on a durable topic it renews the producer's
alive key (see :mod:`framework.pubsub._stream_publisher`).

The thread does not take the producer's lock: a flush that stores a large batch may hold
it for minutes, and consumers must not take that for a dead producer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from framework._failures import RepeatedFailure

__all__ = ["Heartbeats"]

logger = logging.getLogger(__name__)

#: Seconds the thread waits to be stopped when no topic is open.
_IDLE_WAIT = 1.0
#: Longest wait (s) for the thread to stop.
_JOIN_TIMEOUT = 5.0

#: ``beat(topic, next_seq, closing)``: publish one heartbeat.
Beat = Callable[[str, int, bool], None]


class Heartbeats:
    """Tracks a producer's open topics and sends their heartbeats.

    Args:
        interval: Seconds of silence on a topic before it gets a heartbeat.
        beat: Publishes one heartbeat; ``closing`` ones tell consumers that no more come.
    """

    def __init__(self, interval: float, beat: Beat) -> None:
        self.interval = interval
        self._beat = beat
        self._lock = threading.Lock()
        #: Open topic -> (monotonic time of its last message, sequence number after it)
        self._topics: dict[str, tuple[float, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = RepeatedFailure(logger, "Sending heartbeats")

    def sent(self, topic: str, next_seq: int, final: bool) -> None:
        """A message of ``topic`` was published; ``final`` ones end the topic."""
        with self._lock:
            if final:
                self._topics.pop(topic, None)
                return
            self._topics[topic] = (time.monotonic(), next_seq)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="fw-stream-heartbeat", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop the thread; tell consumers of topics still open that no more heartbeats come.

        Idempotent. A failed goodbye is logged: its consumers then report the producer
        as possibly lost, three heartbeats later.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
        with self._lock:
            topics, self._topics = self._topics, {}
        for topic, (_, next_seq) in topics.items():
            self._send(topic, next_seq, closing=True)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [(t, s) for t, (at, s) in self._topics.items() if now - at >= self.interval]
                times = [at + self.interval for at, _ in self._topics.values()]
            for topic, next_seq in due:
                self._send(topic, next_seq, closing=False)
                self._touch(topic)
            # After sending, the next times are those of the topics just touched.
            wait = 0.0 if due else min(times, default=now + _IDLE_WAIT) - now
            if self._stop.wait(min(max(wait, 0.0), _IDLE_WAIT)):
                return

    def _touch(self, topic: str) -> None:
        with self._lock:
            if topic in self._topics:  # ended meanwhile: gone
                self._topics[topic] = (time.monotonic(), self._topics[topic][1])

    def _send(self, topic: str, next_seq: int, closing: bool) -> None:
        try:
            self._beat(topic, next_seq, closing)
        except Exception as exc:  # noqa: BLE001 - thread boundary: logged, the next beat retries
            self._failures.failed(exc)
        else:
            self._failures.succeeded()

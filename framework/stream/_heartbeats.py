"""A producer's heartbeats on its open topics, sent by a thread of its own.

A consumer hears nothing else from a producer that was killed: without heartbeats it
would wait forever for the end of its topic. A topic that has had nothing published for
``interval`` seconds gets a heartbeat. On pub/sub it carries the sequence number that
follows the last message *sent*, so a heartbeat that overtakes a batch being published
is a duplicate to consumers, never a gap; on a durable topic it renews the producer's
alive key (see :mod:`framework.pubsub._stream_publisher`).

The thread does not take the producer's lock: a flush that stores a large batch may hold
it for minutes, and consumers must not take that for a dead producer.

A producer whose process was stopped or starved (a long call holding the GIL, swapping)
sends no heartbeats either, and its consumers count it gone just the same, though it
lives on. Such a silence is a *lapse*: noted when the producer next speaks on the topic
(a message or a heartbeat, when it is through), or when asked
(:meth:`Heartbeats.lapses`), so the producer can tell its caller that what it sends
from then on may not be read. An attempt that failed counts as speaking: a producer
that cannot reach Redis is told so by each send, and while Redis restarts its
consumers' subscriptions are down too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from framework._failures import RepeatedFailure

__all__ = ["Heartbeats", "Lapse"]

logger = logging.getLogger(__name__)

#: Seconds the thread waits to be stopped when no topic is open.
_IDLE_WAIT = 1.0
#: Longest wait (s) for the thread to stop.
_JOIN_TIMEOUT = 5.0

#: ``beat(topic, next_seq, closing)``: publish one heartbeat.
Beat = Callable[[str, int, bool], None]


@dataclass(frozen=True)
class Lapse:
    """A silence on a topic long enough for consumers to count the producer gone."""

    topic: str
    #: The first event number consumers that gave up will not read.
    next_seq: int
    #: Seconds the producer said nothing on the topic.
    silent: float


class Heartbeats:
    """Tracks a producer's open topics, sends their heartbeats and notes their lapses.

    Args:
        interval: Seconds of silence on a topic before it gets a heartbeat.
        beat: Publishes one heartbeat; ``closing`` ones tell consumers that no more come.
        patience: Seconds of silence after which consumers count the producer gone.
    """

    def __init__(self, interval: float, beat: Beat, patience: float) -> None:
        self.interval = interval
        self.patience = patience
        self._beat = beat
        self._lock = threading.Lock()
        #: Open topic -> (monotonic time it was last spoken on, sequence number after it)
        self._topics: dict[str, tuple[float, int]] = {}
        #: Lapses not yet taken by :meth:`lapses`, by topic.
        self._lapses: dict[str, Lapse] = {}
        #: Topic -> the time it was last spoken on, once that silence was noted a lapse.
        self._noted: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = RepeatedFailure(logger, "Sending heartbeats")

    def sent(self, topic: str, next_seq: int, final: bool) -> None:
        """A message of ``topic`` was published; ``final`` ones end the topic."""
        with self._lock:
            now = time.monotonic()
            self._note_lapse(topic, now)
            if final:
                self._topics.pop(topic, None)
                self._noted.pop(topic, None)
                return
            self._topics[topic] = (now, next_seq)
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
            now = time.monotonic()
            for topic in self._topics:
                self._note_lapse(topic, now)
            topics, self._topics = self._topics, {}
        for topic, (_, next_seq) in topics.items():
            self._send(topic, next_seq, closing=True)

    def _run(self) -> None:
        while True:
            now = time.monotonic()
            with self._lock:
                due = [(t, s) for t, (at, s) in self._topics.items() if now - at >= self.interval]
                times = [at + self.interval for at, _ in self._topics.values()]
                for topic, _ in due:  # late by more than consumers wait: this process stalled
                    self._note_lapse(topic, now)
            for topic, next_seq in due:
                self._send(topic, next_seq, closing=False)
                self._touch(topic)
            # After sending, the next times are those of the topics just touched.
            wait = 0.0 if due else min(times, default=now + _IDLE_WAIT) - now
            if self._stop.wait(min(max(wait, 0.0), _IDLE_WAIT)):
                return

    def lapses(self, topics: Iterable[str] | None = None) -> list[Lapse]:
        """Take the lapses of ``topics`` (default: all) noted so far, or going on now.

        Each lapse is returned once.
        """
        with self._lock:
            now = time.monotonic()
            wanted = set(self._topics) | set(self._lapses) if topics is None else set(topics)
            for topic in wanted:
                self._note_lapse(topic, now)
            return [self._lapses.pop(t) for t in sorted(wanted & self._lapses.keys())]

    def _note_lapse(self, topic: str, now: float) -> None:
        """Note a lapse if ``topic`` has been silent too long (the lock is held)."""
        entry = self._topics.get(topic)
        if entry is None or topic in self._lapses:
            return
        at, next_seq = entry
        if now - at > self.patience and self._noted.get(topic) != at:
            self._lapses[topic] = Lapse(topic, next_seq, now - at)
            self._noted[topic] = at  # one silence, one lapse

    def _touch(self, topic: str) -> None:
        """A heartbeat of ``topic`` was attempted: it counts from now."""
        with self._lock:
            if topic in self._topics:  # ended meanwhile: gone
                now = time.monotonic()
                self._note_lapse(topic, now)  # a beat that hung is heard that late
                self._topics[topic] = (now, self._topics[topic][1])

    def _send(self, topic: str, next_seq: int, closing: bool) -> None:
        try:
            self._beat(topic, next_seq, closing)
        except Exception as exc:  # noqa: BLE001 - thread boundary: logged, the next beat retries
            self._failures.failed(exc)
        else:
            self._failures.succeeded()

"""Per-producer bookkeeping of a consumer: sequence checks, runs, ends, suspicions (no I/O).

Each producer numbers the events of a topic from 0 in every run (``epoch``), so a
consumer that sees every event of a topic in order (a ``complete`` subscriber)
tells a duplicate (a resend) from a gap (a loss) and a restarted producer (a new
epoch) from a replay. A topic ends once every producer seen on it has sent its
end-of-stream event. After an interrupted subscription the producers seen so far
are *suspect*: the next batch of each shows by its numbers whether anything was
lost; a suspect that stays silent for the grace period is reported as possibly
lost (its end may have been among the lost events) and counted as ended, so a
consumer never waits forever for an end that will not come.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from framework.exceptions import MessageLossError
from framework.stream.events import EndOfStreamEvent, Event, EventBatch

__all__ = ["Sequencer"]

logger = logging.getLogger(__name__)


@dataclass
class _Producer:
    epoch: str
    expected: int = 0
    ended: bool = False
    suspect_since: float | None = None  # monotonic time of an unverified interruption


class Sequencer:
    """Checks each producer's sequence numbers per topic and tracks when topics end.

    Args:
        complete: The subscriber sees every event of its topics in order, so a
            gap means loss. When False (a consumer-group member sees its share
            only) batches pass unchecked; ends are still tracked per producer.
    """

    def __init__(self, *, complete: bool) -> None:
        self.complete = complete
        self._producers: dict[tuple[str, str], _Producer] = {}

    def admit(self, batch: EventBatch) -> tuple[list[Event], MessageLossError | None]:
        """Return the batch's new events and the loss its numbering reveals, if any."""
        events = list(batch.events)
        if not batch.producer:  # unnumbered (a foreign event shim): only its end counts
            self._note_ends(self._producers.setdefault((batch.topic, ""), _Producer("")), events)
            return events, None
        key = (batch.topic, batch.producer)
        state = self._producers.get(key)
        if state is None or state.epoch != batch.epoch:
            return self._first(key, batch, restarted=state is not None)
        if not self.complete:
            self._note_ends(state, events)
            return events, None
        expected = state.expected
        state.suspect_since = None
        if batch.next_seq <= expected:
            logger.debug("Dropping a duplicate batch %s:%d", batch.producer, batch.seq)
            return [], None
        state.expected = batch.next_seq
        events = events[max(0, expected - batch.seq) :]
        self._note_ends(state, events)
        if batch.seq > expected:
            return events, MessageLossError.gap(batch.topic, batch.producer, expected, batch.seq)
        return events, None

    def _first(
        self, key: tuple[str, str], batch: EventBatch, *, restarted: bool
    ) -> tuple[list[Event], MessageLossError | None]:
        """A producer's first batch in this consumer, or the first of its new run."""
        state = self._producers[key] = _Producer(batch.epoch, batch.next_seq)
        events = list(batch.events)
        self._note_ends(state, events)
        if restarted:
            logger.info("Producer %r of topic %r restarted (a new run)", batch.producer, key[0])
        if not self.complete or batch.seq == 0:
            return events, None
        # A new run that starts past 0 lost its first events; a producer first met
        # mid-run may simply have started before this consumer subscribed.
        loss = MessageLossError.gap(key[0], batch.producer, 0, batch.seq, possible=not restarted)
        return events, loss

    @staticmethod
    def _note_ends(state: _Producer, events: list[Event]) -> None:
        if any(isinstance(event, EndOfStreamEvent) for event in events):
            state.ended = True

    def ended(self, topic: str) -> bool:
        """Whether every producer seen on ``topic`` has ended (False if none was seen)."""
        states = [s for (t, _), s in self._producers.items() if t == topic]
        return bool(states) and all(s.ended for s in states)

    def interrupt(self, now: float) -> None:
        """The subscription dropped: every producer not yet ended becomes suspect."""
        for state in self._producers.values():
            if not state.ended and state.suspect_since is None:
                state.suspect_since = now

    def next_check(self) -> float | None:
        """Monotonic time of the oldest suspicion, or ``None`` if nothing is suspect."""
        times = [s.suspect_since for s in self._producers.values() if s.suspect_since is not None]
        return min(times) if times else None

    def overdue(self, now: float, grace: float) -> list[MessageLossError]:
        """Give up on suspects silent for ``grace`` seconds: report them, count them ended."""
        losses = []
        for (topic, producer), state in self._producers.items():
            since = state.suspect_since
            if since is None or now - since < grace:
                continue
            state.suspect_since, state.ended = None, True
            losses.append(
                MessageLossError(
                    f"Possibly lost events on topic {topic!r} from producer {producer!r}: "
                    f"the subscription was interrupted and nothing arrived from it within "
                    f"{grace} s; events from sequence {state.expected} on, its end included, "
                    "may be lost. The producer counts as ended.",
                    topic=topic,
                    producer=producer,
                    expected=state.expected,
                    possible=True,
                )
            )
        return losses

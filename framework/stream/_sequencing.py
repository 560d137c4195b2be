"""Per-producer bookkeeping of a consumer: sequence checks, runs, ends, suspicions (no I/O).

Each producer numbers the events of a topic from 0 in every run (``epoch``), so a
consumer that sees every event of a topic in order (a ``complete`` subscriber)
tells a duplicate (a resend) from a gap (a loss) and a restarted producer (a new
epoch) from a replay. A batch of a run that started before the one being followed is
ignored and logged, never taken for a restart: it can only be a replay (an old signed
message written into the topic again). A topic ends once every producer seen on it has sent its
end-of-stream event. After an interrupted subscription the producers seen so far
are *suspect*: the next batch of each shows by its numbers whether anything was
lost; a suspect that stays silent for the grace period is reported as possibly
lost (its end may have been among the lost events) and counted as ended, so a
consumer never waits forever for an end that will not come. A producer that
promised heartbeats (``EventBatch.beat``) and fell silent for :data:`SILENT_BEATS`
of them was killed or cut off: it is reported and counted as ended the same way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from framework.exceptions import MessageLossError
from framework.stream.events import EndOfStreamEvent, Event, EventBatch, epoch_started

__all__ = ["ALWAYS", "SILENT_BEATS", "Sequencer"]

logger = logging.getLogger(__name__)

#: Heartbeat intervals of silence after which a beating producer counts as gone.
SILENT_BEATS = 3
#: ``listening`` of a subscription that has always been up.
ALWAYS = float("-inf")


@dataclass
class _Producer:
    epoch: str
    expected: int = 0
    ended: bool = False
    suspect_since: float | None = None  # monotonic time of an unverified interruption
    heard: float = 0.0  # monotonic time of its last batch
    beat: float | None = None  # its promised heartbeat interval (s), if any

    def silent_after(self, listening: float | None) -> float | None:
        """When this producer counts as gone if nothing more arrives, or None.

        Args:
            listening: Since when the subscription has been up (None: it is down now).
                Heartbeats sent while it was down never arrive: only the silence
                since then counts.
        """
        if self.ended or not self.beat or listening is None:
            return None
        return max(self.heard, listening) + SILENT_BEATS * self.beat


def _earlier_run(epoch: str, than: str) -> bool:
    """Whether run ``epoch`` started before run ``than`` (False if either does not say)."""
    started, current = epoch_started(epoch), epoch_started(than)
    return started is not None and current is not None and started < current


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

    def admit(
        self, batch: EventBatch, now: float | None = None
    ) -> tuple[list[Event], MessageLossError | None]:
        """Return the batch's new events and the loss its numbering reveals, if any.

        Args:
            batch: The batch, as read.
            now: Monotonic time it was read (default: now).
        """
        events = list(batch.events)
        if not batch.producer:  # unnumbered (a foreign event shim): only its end counts
            self._note_ends(self._producers.setdefault((batch.topic, ""), _Producer("")), events)
            return events, None
        key = (batch.topic, batch.producer)
        state = self._producers.get(key)
        if state is None or state.epoch != batch.epoch:
            if state is not None and _earlier_run(batch.epoch, state.epoch):
                logger.warning(
                    "Ignoring a batch of producer %r on topic %r: it belongs to run %s, "
                    "which started before run %s (a replayed message?).",
                    batch.producer,
                    key[0],
                    batch.epoch,
                    state.epoch,
                )
                return [], None
            admitted = self._first(key, batch, restarted=state is not None)
            self._heard(self._producers[key], batch, now)
            return admitted
        self._heard(state, batch, now)
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

    def _heard(self, state: _Producer, batch: EventBatch, now: float | None) -> None:
        # Only a subscriber that sees every message sees every heartbeat: a consumer
        # group member gets some of them, and must not take the gaps for silence.
        if self.complete:
            state.heard = time.monotonic() if now is None else now
            state.beat = batch.beat

    @staticmethod
    def _note_ends(state: _Producer, events: list[Event]) -> None:
        if any(isinstance(event, EndOfStreamEvent) for event in events):
            state.ended = True

    def ended(self, topic: str) -> bool:
        """Whether every producer seen on ``topic`` has ended (False if none was seen)."""
        states = [s for (t, _), s in self._producers.items() if t == topic]
        return bool(states) and all(s.ended for s in states)

    def stop(self, topic: str, producer: str) -> None:
        """``producer`` stopped without ending ``topic`` (its subscriber found it gone)."""
        state = self._producers.get((topic, producer))
        if state is not None:
            state.ended, state.suspect_since = True, None

    def interrupt(self, now: float) -> None:
        """The subscription dropped: every producer not yet ended becomes suspect."""
        for state in self._producers.values():
            if not state.ended and state.suspect_since is None:
                state.suspect_since = now

    def next_check(self, grace: float, listening: float | None = ALWAYS) -> float | None:
        """Monotonic time at which :meth:`overdue` may have something to report, or None.

        Args:
            grace: Seconds a suspect producer has to show by its next batch that nothing
                was lost.
            listening: Since when the subscription has been up (None: down now).
        """
        states = self._producers.values()
        times = [s.suspect_since + grace for s in states if s.suspect_since is not None]
        times += [t for t in (s.silent_after(listening) for s in states) if t is not None]
        return min(times) if times else None

    def overdue(
        self, now: float, grace: float, listening: float | None = ALWAYS
    ) -> list[MessageLossError]:
        """Give up on silent producers: report them, count them ended.

        A suspect producer is given up after ``grace`` seconds without a batch; a
        producer that promised heartbeats, after :data:`SILENT_BEATS` of them (counted
        while the subscription was up: ``listening`` as in :meth:`next_check`).
        """
        losses = []
        for (topic, producer), state in self._producers.items():
            loss = self._silent(topic, producer, state, now, grace, listening)
            if loss is not None:
                state.suspect_since, state.ended = None, True
                losses.append(loss)
        return losses

    @staticmethod
    def _silent(
        topic: str,
        producer: str,
        state: _Producer,
        now: float,
        grace: float,
        listening: float | None,
    ) -> MessageLossError | None:
        since = state.suspect_since
        if since is not None and now - since >= grace:
            why = f"the subscription was interrupted and nothing arrived from it within {grace} s"
        else:
            silent = state.silent_after(listening)
            if silent is None or now < silent:
                return None
            quiet = now - max(state.heard, listening or now)
            why = (
                f"nothing, not even a heartbeat, arrived from it for {quiet:.0f} s "
                f"(it promised one every {state.beat} s): it was stopped without ending "
                "the topic, or cut off from Redis"
            )
        return MessageLossError(
            f"Possibly lost events on topic {topic!r} from producer {producer!r}: {why}; "
            f"events from sequence {state.expected} on, its end included, may be lost. "
            "The producer counts as ended.",
            topic=topic,
            producer=producer,
            expected=state.expected,
            possible=True,
            gone=True,
        )

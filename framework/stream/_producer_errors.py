"""How a producer words the errors it raises for what happened behind a caller's back.

An aggregator failure found by the linger thread, or a heartbeat lapse noted while the
process was stalled, is reported to whichever call comes next, possibly much later
and on another thread. The message must then stand on its own: what failed, on which
topic, and what became of the objects, so the caller can act on it without the log.
"""

from __future__ import annotations

from typing import Any

from framework.exceptions import AggregationError, HeartbeatLapsedError
from framework.stream._building import FailedBatch
from framework.stream._heartbeats import Lapse

__all__ = ["aggregation_error", "lapsed", "type_name"]


def lapsed(
    producer: str, lapses: list[Lapse], patience: float, outcome: str
) -> HeartbeatLapsedError:
    """The error reporting ``lapses`` (the first in full, the others by topic)."""
    first = lapses[0]
    others = [lapse.topic for lapse in lapses[1:]]
    also = f" The same holds for topic(s) {', '.join(map(repr, others))}." if others else ""
    return HeartbeatLapsedError(
        f"Producer {producer!r} said nothing on topic {first.topic!r} for {first.silent:.1f} s "
        f"(its process was stopped or starved, and its heartbeats did not go out), while "
        f"consumers count a producer gone after {patience:g} s: they may have stopped "
        f"reading it, and events from sequence {first.next_seq} on may never be read.{also} "
        f"{outcome}",
        topic=first.topic,
        producer=producer,
        expected=first.next_seq,
        silent=first.silent,
        patience=patience,
    )


def type_name(obj: Any) -> str:
    kind = type(obj)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def aggregation_error(
    topic: str, aggregator: Any, failed: FailedBatch, outcome: str
) -> AggregationError:
    """The error reporting ``failed``, a batch the aggregator of ``topic`` failed on."""
    name = getattr(aggregator, "__qualname__", None) or repr(aggregator)
    count = len(failed.items)
    return AggregationError(
        f"The aggregator {name} failed on a batch of {count} object(s) of topic {topic!r} "
        f"({type(failed.cause).__name__}: {failed.cause}): the batch was not published and "
        f"is no longer buffered; its objects are this error's .objects. {outcome}",
        topic=topic,
        aggregator=name,
        objects=[item.obj for item in failed.items],
        metadata=[item.metadata for item in failed.items],
    )

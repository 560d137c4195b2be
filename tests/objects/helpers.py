"""Producers, consumers and factories that record what happened, for the object-protocol tests.

Child processes are spawned, so their entry points live here and take plain values.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from framework.objects import (
    ConsumerFactory,
    FLContext,
    ObjectConsumer,
    ObjectProducer,
    ReturnCode,
    Shareable,
    StreamContextKey,
    make_reply,
)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def shareable(**items: Any) -> Shareable:
    """A Shareable holding ``items``."""
    return Shareable(items)


class ListProducer(ObjectProducer):
    """Produces the given objects, then ends; records every round's replies.

    Args:
        objects: What ``produce`` returns, in order (then ``(None, timeout)``).
        timeout: The timeout returned with each object.
        result_at: If set, ``process_replies`` returns ``result`` after that many rounds.
        result: What ``process_replies`` returns at ``result_at``.
    """

    def __init__(
        self,
        objects: list[Shareable],
        timeout: float = 10.0,
        result_at: int | None = None,
        result: Any = None,
    ) -> None:
        self.objects = list(objects)
        self.timeout = timeout
        self.result_at = result_at
        self.result = result
        self.rounds: list[dict[str, Shareable]] = []

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        if len(self.rounds) >= len(self.objects):
            return None, self.timeout
        return self.objects[len(self.rounds)], self.timeout

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        self.rounds.append(replies)
        if self.result_at is not None and len(self.rounds) >= self.result_at:
            return self.result
        return None


@dataclass
class Session:
    """What one consumer saw."""

    consumed: list[Shareable] = field(default_factory=list)
    ctx: dict[str, Any] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    rc: str | None = None
    peer: str = ""
    ended: threading.Event = field(default_factory=threading.Event)


class RecordingConsumer(ObjectConsumer):
    """Records objects; replies ``{"n": count}``; can stop, raise or sleep on command.

    An object with key ``"stop"`` ends the session; ``"raise"`` raises; ``"return"``
    returns its value instead of a ``(continue, reply)`` pair; ``"sleep"`` sleeps that
    many seconds before replying.
    """

    def __init__(
        self, session: Session, sleeps: bool = True, gate: threading.Event | None = None
    ) -> None:
        self.session = session
        self.sleeps = sleeps
        self.gate = gate

    def consume(
        self, shareable: Shareable, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> tuple[bool, Shareable]:
        s = self.session
        s.consumed.append(shareable)
        s.peer = fl_ctx.get_peer_name()
        s.events.append("consume")
        if "raise" in shareable:
            raise RuntimeError("consumer exploded")
        if "return" in shareable:  # a consumer that breaks the (continue, reply) contract
            return shareable["return"]  # type: ignore[no-any-return]
        if self.sleeps and self.gate is not None and "sleep" in shareable:
            self.gate.wait(30)  # held until the test opens the gate
        elif self.sleeps:
            time.sleep(shareable.get("sleep", 0))
        reply = make_reply(ReturnCode.OK)
        reply["n"] = len(s.consumed)
        return "stop" not in shareable, reply

    def finalize(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> None:
        self.session.ctx = dict(stream_ctx)
        self.session.rc = stream_ctx[StreamContextKey.RC]
        self.session.events.append("finalize")


class RecordingFactory(ConsumerFactory):
    """Makes a :class:`RecordingConsumer` per session and records the calls."""

    def __init__(self, sleeps: bool = True, gate: threading.Event | None = None) -> None:
        self.sleeps = sleeps
        self.gate = gate
        self.sessions: list[Session] = []
        self.returned: list[Session] = []
        self.new_session = threading.Event()
        self._lock = threading.Lock()

    def get_consumer(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> ObjectConsumer:
        session = Session()
        with self._lock:
            self.sessions.append(session)
        self.new_session.set()
        return RecordingConsumer(session, self.sleeps, self.gate)

    def return_consumer(
        self, consumer: ObjectConsumer, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> None:
        assert isinstance(consumer, RecordingConsumer)
        consumer.session.events.append("return")
        self.returned.append(consumer.session)
        consumer.session.ended.set()

    def done_cb(self, stream_ctx: dict[str, Any], fl_ctx: FLContext, **kwargs: Any) -> None:
        """A ``stream_done_cb`` recording into the session of the finished stream."""
        for session in self.sessions:
            if session.ctx is not None and session.events and session.events[-1] == "finalize":
                session.events.append(f"done:{kwargs.get('tag')}")

    def wait_ended(self, count: int, timeout: float = 20) -> list[Session]:
        """Wait until ``count`` sessions have been returned."""
        deadline = time.monotonic() + timeout
        while len(self.returned) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.returned)}/{count} sessions ended in {timeout} s")
            time.sleep(0.01)
        return list(self.returned)


# -- child processes -----------------------------------------------------------------------


class ChecksumConsumer(ObjectConsumer):
    """Replies with the sum of every numpy array in the object, per key."""

    def __init__(self, queue: Any, name: str) -> None:
        self.queue = queue
        self.name = name
        self.rounds = 0

    def consume(
        self, shareable: Shareable, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> tuple[bool, Shareable]:
        self.rounds += 1
        reply = make_reply(ReturnCode.OK)
        reply["sums"] = {k: float(v.sum()) for k, v in shareable.items() if hasattr(v, "sum")}
        reply["round"] = shareable.get("round")
        return True, reply

    def finalize(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> None:
        self.queue.put(("done", self.name, stream_ctx[StreamContextKey.RC], self.rounds))


class ChecksumFactory(ConsumerFactory):
    def __init__(self, queue: Any, name: str) -> None:
        self.queue = queue
        self.name = name

    def get_consumer(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> ObjectConsumer:
        return ChecksumConsumer(self.queue, self.name)


def child_site(url: str, name: str, queue: Any, inline_limit: int) -> None:
    """A client site: an engine that checksums what it receives, until killed."""
    from framework.cell import StreamCell
    from framework.connection import RedisConnection
    from framework.objects import EngineConfig, RedisStreamableEngine

    with RedisConnection.from_url(url) as conn, StreamCell(conn, name) as cell:
        config = EngineConfig(inline_limit=inline_limit)
        with RedisStreamableEngine(cell, config=config) as engine:
            engine.register_stream_processing("fl", "weights", ChecksumFactory(queue, name))
            queue.put(("ready", name))
            time.sleep(600)


class StallingProducer(ObjectProducer):
    """Sends one object, then reports and hangs (the test SIGKILLs the process)."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        return Shareable({"x": 1}), 30

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        self.queue.put(("sent", {k: v.get_return_code() for k, v in replies.items()}))
        time.sleep(600)


def child_sender(url: str, target: str, queue: Any) -> None:
    """A server that sends one object to ``target`` and then hangs until killed."""
    from framework.cell import StreamCell
    from framework.connection import RedisConnection
    from framework.objects import RedisStreamableEngine

    with (
        RedisConnection.from_url(url) as conn,
        StreamCell(conn, "doomed") as cell,
        RedisStreamableEngine(cell) as engine,
    ):
        engine.stream_objects("c", "t", {}, [target], StallingProducer(queue), FLContext())

"""The demo: the framework's main job, end to end, across processes.

1. **Object stream.** A producer sends small records (inline in the events) and numpy
   arrays (kept in a :class:`~framework.store.RedisStore`, evicted when read) on a
   durable topic; a consumer in another process iterates over them.
2. **Byte stream.** A :class:`~framework.cell.StreamCell` uploads one generated blob
   once and two cells in two other processes receive it (fan-out).
3. **Object protocol.** A :class:`~framework.objects.RedisStreamableEngine` sends a
   model-weights :class:`~framework.objects.Shareable` round by round to two sites
   (NVFlare's ``ObjectProducer``/``ObjectConsumer``); each site replies to every round.

Every receiver's count, byte total and SHA-256 are compared with the sender's. The
clock of a step runs from its first send to its last receive: children report when
they are ready, so process start-up is never timed.

Each run works under a key prefix of its own (``<prefix>:demo:<run id>``) and deletes
every key under it when it ends, also after a failure or Ctrl-C. So the demo can run
any number of times, also concurrently, against one Redis and leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import queue
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework._demo_children import (
    BLOB_CHANNEL,
    BLOB_TOPIC,
    ROUNDS_CHANNEL,
    ROUNDS_TOPIC,
    DemoNames,
    Tally,
    consume_objects,
    demo_objects,
    fold_weights,
    model_round,
    receive_blob,
    serve_rounds,
)
from framework._keyspace import delete_keys
from framework.cell import Message, StreamCell
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import FrameworkError
from framework.objects import (
    FLContext,
    ObjectProducer,
    RedisStreamableEngine,
    ReturnCode,
    Shareable,
)
from framework.pubsub import RedisStreamPublisher
from framework.settings import RedisSettings
from framework.store import RedisStore
from framework.stream import StreamProducer

__all__ = ["FAKEREDIS_PLAN", "DemoPlan", "StepResult", "run_demo"]

logger = logging.getLogger(__name__)

#: Seconds the children of a step may stay silent (no start, progress or result) before
#: the step is reported as failed.
STEP_TIMEOUT = 60.0
_POLL = 0.1
_SPAWN = mp.get_context("spawn")

#: ``progress(step, completed, total)``: called from the calling thread while a step runs.
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoPlan:
    """How much the demo moves.

    Attributes:
        records: Small records on the object stream.
        arrays: float32 numpy arrays on the object stream.
        array_mb: MiB per array.
        blob_mb: MiB of the byte stream's blob (sent once, received by two cells).
        rounds: Object-protocol rounds.
        round_mb: MiB of model weights per round.
    """

    records: int = 2000
    arrays: int = 8
    array_mb: int = 4
    blob_mb: int = 64
    rounds: int = 5
    round_mb: int = 4


#: The default load on an embedded fakeredis server: it parses commands in Python, so
#: multi-MB batches take seconds there.
FAKEREDIS_PLAN = DemoPlan(records=500, arrays=4, array_mb=1, blob_mb=8, rounds=3, round_mb=1)


@dataclass(frozen=True)
class StepResult:
    """What one step delivered and how fast.

    Attributes:
        step: Name of the step.
        items: Objects received, summed over the receivers.
        nbytes: Payload bytes received, summed over the receivers.
        seconds: From the first send to the last receive.
    """

    step: str
    items: int
    nbytes: int
    seconds: float

    @property
    def mb_per_s(self) -> float:
        """Throughput in MB/s (10**6 bytes)."""
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _Children:
    """The spawned processes of one step and the queue they report on; always reaped."""

    def __init__(self) -> None:
        self.queue: Any = _SPAWN.Queue()
        self.procs: dict[str, Any] = {}

    def start(self, who: str, target: Callable[..., None], *args: Any) -> None:
        # Arguments (the URL, with its password) travel pickled through a pipe, never
        # on the child's command line.
        proc = _SPAWN.Process(target=target, args=(*args, self.queue), name=f"demo-{who}")
        proc.daemon = True
        proc.start()
        self.procs[who] = proc

    def wait(
        self, kind: str, whos: set[str], tick: Callable[[tuple[Any, ...]], None]
    ) -> dict[str, tuple[Any, ...]]:
        """Collect one ``kind`` message from each of ``whos``; ``tick`` sees every message."""
        got: dict[str, tuple[Any, ...]] = {}
        last = time.monotonic()
        while whos - got.keys():
            try:
                message = self.queue.get(timeout=_POLL)
            except queue.Empty:
                self._check_alive(whos - got.keys(), last)
                tick(())
                continue
            last = time.monotonic()
            if message[0] == "error":
                raise FrameworkError(f"The demo's {message[1]} process failed: {message[2]}")
            if message[0] == kind:
                got[message[1]] = message
            tick(message)
        return got

    def _check_alive(self, pending: set[str], last: float) -> None:
        dead = [w for w in pending if self.procs[w].exitcode is not None]
        if dead and self.queue.empty():
            who = dead[0]
            code = self.procs[who].exitcode
            raise FrameworkError(f"The demo's {who} process exited with code {code} early.")
        if time.monotonic() - last > STEP_TIMEOUT:
            raise FrameworkError(
                f"The demo's {', '.join(sorted(pending))} sent nothing for {STEP_TIMEOUT:.0f} s."
            )

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs.values():
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self.queue.close()
        self.queue.join_thread()

    def __enter__(self) -> _Children:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check(step: str, sent: Tally, received: list[tuple[Any, ...]]) -> None:
    for message in received:
        who, items, nbytes, digest = message[1:5]
        if (items, nbytes, digest) != (sent.items, sent.nbytes, sent.digest):
            raise FrameworkError(
                f"The {step} delivered {items} item(s) / {nbytes} bytes to {who} (SHA-256 "
                f"{digest[:12]}), but {sent.items} / {sent.nbytes} ({sent.digest[:12]}) were sent."
            )


def _result(step: str, sent: Tally, started: float, done: dict[str, tuple[Any, ...]]) -> StepResult:
    """Check every receiver's tally against the sender's and sum them up."""
    _check(step, sent, list(done.values()))
    items = sum(message[2] for message in done.values())
    nbytes = sum(message[3] for message in done.values())
    last = max(message[5] for message in done.values())
    return StepResult(step, items, nbytes, last - started)


def _object_step(
    conn: RedisConnection, url: str, names: DemoNames, plan: DemoPlan, progress: Progress
) -> StepResult:
    step, who = "object stream", "object consumer"
    objects = list(demo_objects(plan.records, plan.arrays, plan.array_mb))
    sent = Tally()
    with _Children() as kids:
        kids.start(who, consume_objects, url, names)
        kids.wait("ready", {who}, lambda m: None)
        store = RedisStore("demo", connection=conn, ttl=STEP_TIMEOUT * 10)
        publisher = RedisStreamPublisher(conn)
        started = time.monotonic()
        with StreamProducer[Any](publisher, default_store=store, batch_size=50) as producer:
            for obj in objects:
                sent.add(obj)
                producer.send(names.topic, obj)
            producer.close_topics(names.topic)

        def tick(message: tuple[Any, ...]) -> None:
            if message and message[0] in ("progress", "done"):
                progress(step, message[2], len(objects))

        done = kids.wait("done", {who}, tick)
    return _result(step, sent, started, done)


def _blob_step(
    conn: RedisConnection, url: str, names: DemoNames, plan: DemoPlan, progress: Progress
) -> StepResult:
    step = f"byte stream (1 upload, {len(names.cells)} cells)"
    blob = np.random.default_rng().bytes(plan.blob_mb << 20)
    sent = Tally()
    sent.add(blob)
    with _Children() as kids, StreamCell(conn, names.sender) as cell:
        for name in names.cells:
            kids.start(name, receive_blob, url, names, name)
        kids.wait("ready", set(names.cells), lambda m: None)
        started = time.monotonic()
        message = Message({"name": "weights.bin"}, blob)
        future = cell.send_blob(BLOB_CHANNEL, BLOB_TOPIC, list(names.cells), message)
        done = kids.wait(
            "done", set(names.cells), lambda m: progress(step, future.get_progress(), len(blob))
        )
        future.result(timeout=STEP_TIMEOUT)
    return _result(step, sent, started, done)


class _Rounds(ObjectProducer):
    """The coordinator: one model-weights Shareable per round; every reply must be OK."""

    def __init__(self, plan: DemoPlan, progress: Callable[[int], None]) -> None:
        self.plan, self.progress = plan, progress
        self.sent, self.number = Tally(), 0

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        if self.number == self.plan.rounds:
            return None, STEP_TIMEOUT
        shareable = model_round(self.number, self.plan.round_mb)
        fold_weights(self.sent, shareable)
        self.number += 1
        return shareable, STEP_TIMEOUT

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        failed = {t: r.get_return_code() for t, r in replies.items() if r.get_return_code() != "OK"}
        if failed:
            return failed  # ends the stream; run_demo reports it
        self.progress(self.number)
        return None


def _rounds_step(
    conn: RedisConnection, url: str, names: DemoNames, plan: DemoPlan, progress: Progress
) -> StepResult:
    rounds = f"{plan.rounds} round{'s' if plan.rounds != 1 else ''}"
    step = f"object protocol ({rounds}, {len(names.cells)} cells)"
    producer = _Rounds(plan, lambda number: progress(step, number, plan.rounds))
    with (
        _Children() as kids,
        StreamCell(conn, names.coordinator) as cell,
        RedisStreamableEngine(cell) as engine,
    ):
        for name in names.cells:
            kids.start(name, serve_rounds, url, names, name)
        kids.wait("ready", set(names.cells), lambda m: None)
        started = time.monotonic()
        rc, failed = engine.stream_objects(
            ROUNDS_CHANNEL, ROUNDS_TOPIC, {}, list(names.cells), producer, FLContext()
        )
        if rc != ReturnCode.OK or failed:
            raise FrameworkError(f"The object protocol ended with {rc}; failed replies: {failed}.")
        done = kids.wait("done", set(names.cells), lambda m: None)
    return _result(step, producer.sent, started, done)


@contextlib.contextmanager
def _redis(url: str | None, echo: Callable[[str], None]) -> Iterator[tuple[str, bool]]:
    """The URL to use, and whether it is an embedded fakeredis server."""
    if url:
        yield url, False
        return
    with EmbeddedRedis() as server:
        echo(server.notice())
        yield server.url, server.is_fake


def run_demo(
    url: str | None = None,
    *,
    plan: DemoPlan | None = None,
    progress: Progress | None = None,
    echo: Callable[[str], None] = print,
) -> list[StepResult]:
    """Run the demo's steps and return what they measured.

    Args:
        url: Redis URL; ``None`` or empty starts an embedded Redis (redis-server from
            PATH, else fakeredis's TCP server).
        plan: How much to move; defaults to :class:`DemoPlan`, or to the smaller
            :data:`FAKEREDIS_PLAN` on an embedded fakeredis server.
        progress: Called with ``(step, completed, total)`` while a step runs.
        echo: Where the demo's few status lines go.

    Returns:
        One :class:`StepResult` per step.

    Raises:
        FrameworkError: If Redis cannot be used, a child process fails, or anything
            arrives other than what was sent. Every key of the run is deleted anyway.
    """
    report = progress or (lambda step, completed, total: None)
    with _redis(url, echo) as (redis_url, fake):
        if plan is None and fake:
            echo("fakeredis is a pure-Python server: the demo moves a smaller load.")
        plan = plan or (FAKEREDIS_PLAN if fake else DemoPlan())
        prefix = RedisSettings.from_url(redis_url).prefix
        names = DemoNames(prefix=f"{prefix}:demo:{uuid.uuid4().hex[:12]}")
        with RedisConnection.from_url(redis_url, prefix=names.prefix) as conn:
            conn.ping()
            echo(f"Redis: {conn.url()}")
            try:
                return [
                    step(conn, redis_url, names, plan, report)
                    for step in (_object_step, _blob_step, _rounds_step)
                ]
            finally:
                _clean_up(conn, names, echo)


def _clean_up(conn: RedisConnection, names: DemoNames, echo: Callable[[str], None]) -> None:
    """Delete every key of the run; a failure is reported, never masks the result."""
    try:
        deleted = delete_keys(conn, f"{names.prefix}:*")
    except FrameworkError as exc:
        echo(f"Warning: the demo's keys under {names.prefix!r} were left behind: {exc}")
    else:
        logger.info("Deleted the demo's %d remaining key(s) under %r.", deleted, names.prefix)

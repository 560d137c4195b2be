"""The demo's child processes (a module of its own, so ``spawn`` can import them).

Each child gets the Redis URL through its process arguments, which ``multiprocessing``
pickles into a pipe (never onto the command line), and reports to the parent through a
queue: ``("ready", who)``, ``("progress", who, items, nbytes)``, then
``("done", who, items, nbytes, digest, last_receive)`` or ``("error", who, text)``.
``last_receive`` is :func:`time.monotonic`, which is one clock for every process on Linux.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from framework.cell import StreamCell, StreamFuture
from framework.connection import RedisConnection
from framework.objects import (
    ConsumerFactory,
    FLContext,
    ObjectConsumer,
    RedisStreamableEngine,
    ReturnCode,
    Shareable,
    StreamContextKey,
    make_reply,
)
from framework.pubsub import RedisStreamSubscriber
from framework.settings import ENV_VAR
from framework.stream import StreamConsumer

__all__ = [
    "DemoNames",
    "Tally",
    "consume_objects",
    "demo_objects",
    "fold_weights",
    "model_round",
    "receive_blob",
    "serve_rounds",
]

#: Seconds a child waits for the next piece of data before it reports a failure.
CHILD_TIMEOUT = 60.0
#: Seconds between two progress reports of a child.
PROGRESS_EVERY = 0.1
#: Channel and topic of the demo's byte stream.
BLOB_CHANNEL, BLOB_TOPIC = "demo", "blob"
#: Channel and topic of the demo's object-protocol rounds.
ROUNDS_CHANNEL, ROUNDS_TOPIC = "demo", "rounds"


@dataclass(frozen=True)
class DemoNames:
    """Everything one demo run names: all of it under the run's own key prefix.

    Attributes:
        prefix: Key prefix of the run (``<prefix>:demo:<run id>``); deleting keys
            under it removes everything the run wrote.
        topic: The object stream's durable topic.
        cells: The byte stream's two receiving cells.
        sender: The sending cell.
        coordinator: The cell that runs the object-protocol rounds.
    """

    prefix: str
    topic: str = "objects"
    cells: tuple[str, str] = ("site-a", "site-b")
    sender: str = "server"
    coordinator: str = "coordinator"


class Tally:
    """Count, bytes and a SHA-256 over the objects of one demo step, in order."""

    def __init__(self) -> None:
        self.items = 0
        self.nbytes = 0
        self._hash = hashlib.sha256()

    def add(self, obj: Any, *, count: int = 1) -> None:
        """Fold one demo object (a numpy array, a bytes-like blob or a record) in."""
        if isinstance(obj, np.ndarray):
            data: Any = np.ascontiguousarray(obj).view(np.uint8).reshape(-1)
        elif isinstance(obj, (bytes, bytearray, memoryview)):
            data = obj
        else:
            data = json.dumps(obj, sort_keys=True).encode()
        self._hash.update(data)
        self.items += count
        self.nbytes += len(data)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of everything added so far."""
        return self._hash.hexdigest()


def demo_objects(records: int, arrays: int, array_mb: int) -> Iterator[Any]:
    """The object stream's content: small records, then float32 arrays of ``array_mb``."""
    for i in range(records):
        yield {"i": i, "name": f"sample-{i}", "tags": ["héllo", "wörld →"], "score": i / 7}
    rng = np.random.default_rng(12)
    for _ in range(arrays):
        yield rng.standard_normal((array_mb << 20) // 4, dtype=np.float32)


def _guarded(who: str, url: str, out: Any, work: Callable[[], None]) -> None:
    """Run ``work``; send any error to the parent as one line instead of a traceback."""
    # Ctrl-C reaches the whole process group; the parent stops the children itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A consumer rebuilds the producer's store from its password-free config and takes
    # the credentials from this variable (see framework.store.registry).
    os.environ[ENV_VAR] = url
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - the child's isolation boundary: the parent reports it
        out.put(("error", who, f"{type(exc).__name__}: {exc}"))


def consume_objects(url: str, names: DemoNames, out: Any) -> None:
    """Child: read the durable topic to its end; report progress and the tally."""
    _guarded("object consumer", url, out, lambda: _consume(url, names, out))


def _consume(url: str, names: DemoNames, out: Any) -> None:
    who = "object consumer"
    with (
        RedisConnection.from_url(url, prefix=names.prefix) as conn,
        StreamConsumer[Any](
            RedisStreamSubscriber(conn, names.topic, timeout=CHILD_TIMEOUT)
        ) as consumer,
    ):
        out.put(("ready", who))
        tally, reported = Tally(), time.monotonic()
        for obj in consumer.iter_objects():
            tally.add(obj)
            if time.monotonic() - reported > PROGRESS_EVERY:
                out.put(("progress", who, tally.items, tally.nbytes))
                reported = time.monotonic()
        last = time.monotonic()
        out.put(("done", who, tally.items, tally.nbytes, tally.digest, last))


def receive_blob(url: str, names: DemoNames, cell: str, out: Any) -> None:
    """Child: a cell that receives the demo's blob and reports its tally."""
    _guarded(cell, url, out, lambda: _receive(url, names, cell, out))


def _receive(url: str, names: DemoNames, cell: str, out: Any) -> None:
    arrived = threading.Event()
    failure: list[BaseException] = []

    def on_blob(future: StreamFuture) -> None:
        try:
            blob = future.result(timeout=CHILD_TIMEOUT)
            last = time.monotonic()
            tally = Tally()
            tally.add(blob)
            out.put(("done", cell, 1, tally.nbytes, tally.digest, last))
        except Exception as exc:  # noqa: BLE001 - re-raised in the child's main thread
            failure.append(exc)
        finally:
            arrived.set()

    with (
        RedisConnection.from_url(url, prefix=names.prefix) as conn,
        StreamCell(conn, cell) as receiver,
    ):
        receiver.register_blob_cb(BLOB_CHANNEL, BLOB_TOPIC, on_blob)
        out.put(("ready", cell))
        if not arrived.wait(CHILD_TIMEOUT):
            raise TimeoutError(f"No blob reached cell {cell!r} within {CHILD_TIMEOUT:.0f} s.")
        if failure:
            raise failure[0]


def model_round(number: int, array_mb: int) -> Shareable:
    """One object-protocol round: a dict of float32 weight arrays and the round number."""
    rng = np.random.default_rng(number)
    half = (array_mb << 20) // 8
    weights = {f"layer{i}": rng.standard_normal(half, dtype=np.float32) for i in range(2)}
    shareable = Shareable({"weights": weights})
    shareable.set_header("round", number)
    return shareable


def fold_weights(tally: Tally, shareable: Shareable) -> None:
    """Add a round's weight arrays to ``tally`` (one item), in a fixed order."""
    for i, name in enumerate(sorted(shareable["weights"])):
        tally.add(shareable["weights"][name], count=int(i == 0))


class _RoundConsumer(ObjectConsumer):
    """Checks each round's weights, replies with their sum, reports at the end."""

    def __init__(self, cell: str, out: Any) -> None:
        self.cell, self.out = cell, out
        self.tally, self.last = Tally(), 0.0

    def consume(
        self, shareable: Shareable, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> tuple[bool, Shareable]:
        fold_weights(self.tally, shareable)
        self.last = time.monotonic()
        reply = make_reply(ReturnCode.OK)
        reply["round"] = shareable.get_header("round")
        reply["sum"] = float(sum(float(a.sum()) for a in shareable["weights"].values()))
        self.out.put(("progress", self.cell, self.tally.items, self.tally.nbytes))
        return True, reply

    def finalize(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> None:
        rc = stream_ctx.get(StreamContextKey.RC, ReturnCode.OK)
        if rc != ReturnCode.OK:
            self.out.put(("error", self.cell, f"the object stream ended with {rc}"))
            return
        tally = self.tally
        self.out.put(("done", self.cell, tally.items, tally.nbytes, tally.digest, self.last))


class _RoundFactory(ConsumerFactory):
    def __init__(self, cell: str, out: Any, ended: threading.Event) -> None:
        self.cell, self.out, self.ended = cell, out, ended

    def get_consumer(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> ObjectConsumer:
        return _RoundConsumer(self.cell, self.out)

    def return_consumer(
        self, consumer: ObjectConsumer, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> None:
        self.ended.set()


def serve_rounds(url: str, names: DemoNames, cell: str, out: Any) -> None:
    """Child: a site that consumes the object-protocol rounds and replies to each."""
    _guarded(cell, url, out, lambda: _serve(url, names, cell, out))


def _serve(url: str, names: DemoNames, cell: str, out: Any) -> None:
    ended = threading.Event()
    with (
        RedisConnection.from_url(url, prefix=names.prefix) as conn,
        StreamCell(conn, cell) as site,
        RedisStreamableEngine(site) as engine,
    ):
        factory = _RoundFactory(cell, out, ended)
        engine.register_stream_processing(ROUNDS_CHANNEL, ROUNDS_TOPIC, factory)
        out.put(("ready", cell))
        if not ended.wait(CHILD_TIMEOUT):
            raise TimeoutError(f"The object-protocol rounds did not end at {cell!r}.")

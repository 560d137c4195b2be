"""The object protocol across processes: round trips of small Shareables, throughput of large ones.

A server engine in this process streams to 1 or 4 client engines in spawned processes
through one throw-away redis-server; each client consumes and replies OK. Beside it, in
the same run and against the same clients:

* the cell's own ``send_blob`` of the same payload (time until every target acknowledged);
* a plain redis-py request/reply loop: ``XADD`` of the payload to each target's request
  stream, the target ``XREAD BLOCK``s it and ``XADD``s a small reply, which the sender
  ``XREAD BLOCK``s (no serialization, sessions, signing or error handling).

Targets: 1 KB round trips to 1 target >= 0.5x the plain loop; 64 MB to 1 target >= 0.8x
``send_blob``'s throughput.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import numpy as np
import redis

from benchmarks.common import MB, SPAWN, table
from framework.cell import Message, StreamCell
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.objects import (
    ConsumerFactory,
    FLContext,
    ObjectConsumer,
    ObjectProducer,
    RedisStreamableEngine,
    ReturnCode,
    Shareable,
    make_reply,
)

SMALL_RATIO = 0.5
LARGE_RATIO = 0.8


# -- clients (child processes) -------------------------------------------------------------


class _Ok(ObjectConsumer):
    def consume(self, shareable: Shareable, stream_ctx: Any, fl_ctx: FLContext) -> Any:
        return True, make_reply(ReturnCode.OK)


class _OkFactory(ConsumerFactory):
    def get_consumer(self, stream_ctx: Any, fl_ctx: FLContext) -> ObjectConsumer:
        return _Ok()


def _plain_echo(url: str, name: str, stop: threading.Event) -> None:
    client = redis.Redis.from_url(url)
    req, rep, last = f"plain:{{{name}}}:req", f"plain:{{{name}}}:rep", "$"
    while not stop.is_set():
        reply = client.xread({req: last}, block=200, count=16)
        for _, entries in reply or []:
            for eid, _fields in entries:
                last = eid
                client.xadd(rep, {b"ok": b"1"})
                client.xdel(req, eid)
    client.close()


def _client(url: str, name: str, ready: Any, stop: Any) -> None:
    with RedisConnection.from_url(url) as conn, StreamCell(conn, name) as cell:
        cell.register_blob_cb("bench", "blob", lambda future: future.result())
        with RedisStreamableEngine(cell) as engine:
            engine.register_stream_processing("bench", "obj", _OkFactory())
            halt = threading.Event()
            echo = threading.Thread(target=_plain_echo, args=(url, name, halt))
            echo.start()
            ready.put(name)
            stop.wait()
            halt.set()
            echo.join()


# -- the three ways to send ------------------------------------------------------------------


class _Timed(ObjectProducer):
    """Sends ``count`` copies of one object; records each round's seconds."""

    def __init__(self, obj: Shareable, count: int) -> None:
        self.obj, self.count = obj, count
        self.times: list[float] = []
        self._started = 0.0

    def produce(self, stream_ctx: Any, fl_ctx: FLContext) -> tuple[Any, float]:
        if len(self.times) == self.count:
            return None, 60
        self._started = time.perf_counter()
        return self.obj, 120

    def process_replies(self, replies: dict[str, Shareable], stream_ctx: Any, fl_ctx: Any) -> Any:
        self.times.append(time.perf_counter() - self._started)
        bad = [t for t, r in replies.items() if r.get_return_code() != ReturnCode.OK]
        if bad:
            raise RuntimeError(f"targets {bad} failed: {replies}")
        return None


def _objects(engine: RedisStreamableEngine, targets: list[str], obj: Shareable, n: int) -> Any:
    producer = _Timed(obj, n)
    engine.stream_objects("bench", "obj", {}, targets, producer, FLContext())
    return producer.times


def _blobs(cell: StreamCell, targets: list[str], data: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        cell.send_blob("bench", "blob", targets, Message({}, data)).result(timeout=300)
        times.append(time.perf_counter() - started)
    return times


def _plain(client: Any, targets: list[str], data: Any, n: int) -> list[float]:
    reps = {f"plain:{{{t}}}:rep": "$" for t in targets}
    for key in reps:
        client.xadd(key, {b"x": b""})  # so "$" has a stream to point into
        reps[key] = client.xinfo_stream(key)["last-generated-id"]
    times = []
    for _ in range(n):
        started = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for t in targets:
            pipe.xadd(f"plain:{{{t}}}:req", {b"d": data})
        pipe.execute()
        waiting = dict(reps)
        while waiting:
            for key, entries in client.xread(waiting, block=1000) or []:
                reps[key.decode()] = entries[-1][0]
                del waiting[key.decode()]
        times.append(time.perf_counter() - started)
    return times


# -- measurement ---------------------------------------------------------------------------


def _measure(url: str, targets: list[str], size: int, n: int, rounds: int) -> dict[str, float]:
    """Median seconds per exchange of each way to send ``size`` bytes to ``targets``.

    The ways take turns, ``rounds`` times ``n`` exchanges each, so a busy moment of the
    machine hits all of them alike.
    """
    data = np.frombuffer(np.random.default_rng(0).bytes(size), dtype=np.uint8)
    raw = data.tobytes()
    client = redis.Redis.from_url(url)
    times: dict[str, list[float]] = {"plain": [], "send_blob": [], "objects": []}
    with (
        RedisConnection.from_url(url) as conn,
        StreamCell(conn, f"server-{size}") as cell,
        RedisStreamableEngine(cell) as engine,
    ):
        for _ in range(rounds):
            times["plain"] += _plain(client, targets, raw, n)
            if size > 64 * 1024:  # a blob of a few KB is not what send_blob is for
                times["send_blob"] += _blobs(cell, targets, data, n)
            times["objects"] += _objects(engine, targets, Shareable({"w": data}), n)
    client.close()
    return {way: statistics.median(t) if t else float("nan") for way, t in times.items()}


def run(quick: bool = False) -> str:
    """Run every case; return the markdown report."""
    large = (8 if quick else 64) * MB
    # (exchanges per turn, turns) for each payload
    small, big = ((100, 3), (1, 2)) if quick else ((400, 5), (1, 5))
    rows, results = [], {}
    with EmbeddedRedis(fake_fallback=False) as server:
        stop, ready = SPAWN.Event(), SPAWN.Queue()
        names = [f"t{i}" for i in range(4)]
        procs = [SPAWN.Process(target=_client, args=(server.url, n, ready, stop)) for n in names]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=120)
        try:
            for size, (n, turns) in ((1024, small), (large, big)):
                for fan in (1, 4):
                    got = _measure(server.url, names[:fan], size, n, turns)
                    results[(size, fan)] = got
                    rows += _rows(size, fan, got)
        finally:
            stop.set()
            for proc in procs:
                proc.join(30)
    return _report(rows, results, large)


def _rows(size: int, fan: int, got: dict[str, float]) -> list[list[Any]]:
    label = "1 KB" if size == 1024 else f"{size // MB} MB"
    out = []
    for way in ("plain", "send_blob", "objects"):
        seconds = got[way]
        if seconds != seconds:  # nan: not measured
            continue
        rate = 1 / seconds
        mbps = size * fan / seconds / MB
        out.append([label, fan, way, seconds * 1000, rate, mbps])
    return out


def _report(rows: list[list[Any]], results: dict[Any, dict[str, float]], large: int) -> str:
    small1, large1 = results[(1024, 1)], results[(large, 1)]
    small_ratio = small1["plain"] / small1["objects"]
    large_ratio = large1["send_blob"] / large1["objects"]
    checks = [
        [
            f"1 KB round trips, 1 target, >= {SMALL_RATIO}x plain loop",
            f"{small_ratio:.2f}x",
            "yes" if small_ratio >= SMALL_RATIO else "NO",
        ],
        [
            f"{large // MB} MB, 1 target, >= {LARGE_RATIO}x send_blob",
            f"{large_ratio:.2f}x",
            "yes" if large_ratio >= LARGE_RATIO else "NO",
        ],
    ]
    head = ["payload", "targets", "way", "ms per round (median)", "rounds/s", "MB/s (all targets)"]
    return "\n\n".join(
        [
            "Server in this process, clients in spawned processes, one local redis-server.",
            table(head, rows),
            table(["target", "measured", "met"], checks),
        ]
    )

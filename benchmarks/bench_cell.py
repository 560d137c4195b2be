"""Byte streams across processes: StreamCell (stream and blob mode, fan-out) vs a plain chunk loop.

Every transfer goes from this process to receivers in spawned processes through one
throw-away redis-server. Two references are measured in the same run:

* NVFlare 2.9's own ``StreamCell`` (the ``bench`` extra): two cells over direct TCP on
  loopback, the receiver (``server``, listening) in a spawned process, using NVFlare's
  documented ``Cell(fqcn, root_url, secure, credentials)`` API. Its time runs until the
  receiver has read the last byte (NVFlare's sender future resolves when the last frame
  is sent, not delivered).
* the loop most people write first: redis-py's default client, one ``XADD`` per 1 MiB
  chunk, a consumer doing ``XREAD COUNT 16`` + ``XDEL``.

For fan-out, a plain reference shows what the machine allows: one writer pipelining
``XADD`` calls of ~1 MiB chunks into one stream and 1 or 4 reader processes each
``XREAD``-ing all of it (``COUNT 16``, no checksums, no flow control).

Targets (same-run ratios): stream mode 1 GB >= 0.8x NVFlare; blob mode 1 GB >= 1.0x
NVFlare; receiver peak RSS <= 100 MB in stream mode; fan-out to 4 receivers relative to
one receiver no worse than the plain redis-py fan-out's ratio.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import socket
import statistics
import threading
import time
from typing import Any

import redis

from benchmarks.common import MB, SPAWN, peak_rss_mb, table
from framework.cell import BytesStream, Message, StreamCell
from framework.embedded import EmbeddedRedis

STREAM_VS_NVFLARE = 0.8
BLOB_VS_NVFLARE = 1.0
STREAM_RSS_MB = 100.0
BASE_CHUNK = MB

_NV_CELLS = itertools.count()

#: (median seconds, receivers' peak RSS in MB, Redis memory peak growth in MB,
#: Redis CPU seconds per transfer)
Measured = tuple[float, float, float, float]
#: (mode, payload size, receivers) -> measurement
Results = dict[tuple[str, int, int], Measured]


def _payload(size: int) -> bytes:
    block = os.urandom(min(size, 16 * MB)) or b""
    return (block * (size // max(len(block), 1) + 1))[:size]


class RedisMemory:
    """Samples Redis's ``used_memory`` in a thread, and the CPU Redis spends meanwhile."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._base = self._used()
        self._peak = self._base
        self._cpu = self._cpu_seconds()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-redis-memory", daemon=True)
        self._thread.start()

    def _used(self) -> int:
        return int(self._client.info("memory")["used_memory"])

    def _cpu_seconds(self) -> float:
        cpu = self._client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self._peak = max(self._peak, self._used())

    def stop(self, transfers: int) -> tuple[float, float]:
        """Peak growth (MB) and Redis CPU seconds per transfer since the start."""
        self._stop.set()
        self._thread.join()
        cpu = (self._cpu_seconds() - self._cpu) / max(1, transfers)
        self._client.close()
        return (self._peak - self._base) / MB, cpu


# -- receivers (child processes) -----------------------------------------------------------


def _cell_receiver(url: str, name: str, count: int, ready: Any, results: Any) -> None:
    from framework.connection import RedisConnection

    done = threading.Semaphore(0)

    def on_stream(future: Any, stream: Any, resume: int) -> None:
        total = 0
        while chunk := stream.read(16 * MB):
            total += len(chunk)
        results.put(("bytes", name, total))
        done.release()

    def on_blob(future: Any) -> None:
        results.put(("bytes", name, len(future.result())))
        done.release()

    with RedisConnection.from_url(url) as conn, StreamCell(conn, name) as cell:
        cell.register_stream_cb("bench", "stream", on_stream)
        cell.register_blob_cb("bench", "blob", on_blob)
        ready.put(name)
        for _ in range(count):
            done.acquire(timeout=600)
    results.put(("rss", name, peak_rss_mb()))


def _nvflare_receiver(url: str, count: int, ready: Any, results: Any) -> None:
    from nvflare.fuel.f3.cellnet.cell import Cell

    done = threading.Semaphore(0)

    def on_stream(future: Any, stream: Any, resume: Any, *args: Any, **kwargs: Any) -> None:
        total = 0
        while chunk := stream.read(16 * MB):
            total += len(chunk)
        results.put(("bytes", "server", total))
        done.release()

    def on_blob(future: Any, *args: Any, **kwargs: Any) -> None:
        results.put(("bytes", "server", len(future.result())))
        done.release()

    cell = Cell(fqcn="server", root_url=url, secure=False, credentials={})
    cell.register_stream_cb("bench", "stream", on_stream)
    cell.register_blob_cb("bench", "blob", on_blob)
    cell.start()
    ready.put("server")
    for _ in range(count):
        done.acquire(timeout=600)
    results.put(("rss", "server", peak_rss_mb()))
    cell.stop()


def _plain_receiver(url: str, key: str, size: int, count: int, ready: Any, results: Any) -> None:
    client = redis.Redis.from_url(url)
    ready.put(key)
    last: Any = "0-0"
    for _ in range(count):
        received = 0
        while received < size:
            reply: Any = client.xread({key: last}, count=16, block=1000)
            for _, entries in reply or []:
                for eid, fields in entries:
                    received += len(fields[b"d"])
                    last = eid
                client.xdel(key, *[eid for eid, _ in entries])
        results.put(("done", key, time.time()))
    results.put(("rss", key, peak_rss_mb()))
    client.close()


def _fanout_reader(url: str, prefix: str, size: int, count: int, ready: Any, results: Any) -> None:
    """Read every entry of one stream per repeat (no XDEL: the other readers need them)."""
    client = redis.Redis.from_url(url)
    ready.put(prefix)
    for rep in range(count):
        key, last, received = f"{prefix}:{rep}", "0-0", 0
        while received < size:
            reply: Any = client.xread({key: last}, count=16, block=1000)
            for _, entries in reply or []:
                received += sum(len(fields[b"d"]) for _, fields in entries)
                last = entries[-1][0]
        # The RSS rides along: a separate message could overtake another reader's "done".
        results.put((time.time(), peak_rss_mb()))
    client.close()


# -- one configuration ---------------------------------------------------------------------


def _spawn(target: Any, args_of: Any, n: int) -> tuple[list[Any], Any]:
    ready, results = SPAWN.Queue(), SPAWN.Queue()
    procs = [SPAWN.Process(target=target, args=(*args_of(i), ready, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    for _ in procs:
        ready.get(timeout=120)
    return procs, results


def _finish(procs: list[Any], results: Any, n: int, early: list[float] | None = None) -> float:
    rss = list(early or [])
    rss += [float(results.get(timeout=120)[2]) for _ in range(n - len(rss))]
    for proc in procs:
        proc.join(60)
    return max(rss)


def _cell_case(url: str, mode: str, size: int, receivers: int, repeat: int) -> Measured:
    """Median seconds per transfer, the receivers' peak RSS and Redis's peak growth (MB)."""
    names = [f"r{i}" for i in range(receivers)]
    procs, results = _spawn(_cell_receiver, lambda i: (url, names[i], repeat), receivers)
    early: list[Any] = []
    data = _payload(size)
    times = []
    from framework.connection import RedisConnection

    memory = RedisMemory(url)
    with RedisConnection.from_url(url) as conn, StreamCell(conn, "bench-sender") as cell:
        for _ in range(repeat):
            started = time.perf_counter()
            if mode == "stream":
                future = cell.send_stream("bench", "stream", names, Message({}, BytesStream(data)))
            else:
                future = cell.send_blob("bench", "blob", names, Message({}, data))
            assert future.result(timeout=600) == size
            times.append(time.perf_counter() - started)
            got: list[Any] = []
            while len(got) < len(names):
                item = results.get(timeout=120)
                # A receiver done with its last transfer reports its RSS, maybe before
                # another receiver reports its bytes.
                (early if item[0] == "rss" else got).append(item)
            assert all(item[2] == size for item in got), got
    redis_mb, redis_cpu = memory.stop(repeat)
    rss = [float(item[2]) for item in early]
    return statistics.median(times), _finish(procs, results, receivers, rss), redis_mb, redis_cpu


def _nvflare_case(mode: str, size: int, repeat: int) -> Measured:
    """NVFlare's StreamCell: sender here, the listening receiver in a spawned process."""
    from nvflare.fuel.f3.cellnet.cell import Cell
    from nvflare.fuel.f3.message import Message as NvMessage
    from nvflare.fuel.f3.streaming.stream_types import Stream as NvStream

    class Source(NvStream):  # type: ignore[misc]
        def __init__(self, data: bytes) -> None:
            super().__init__(len(data))
            self.view = memoryview(data)

        def read(self, n: int) -> memoryview:
            out = self.view[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    url = f"tcp://127.0.0.1:{_free_port()}"
    procs, results = _spawn(_nvflare_receiver, lambda i: (url, repeat), 1)
    data = _payload(size)
    # NVFlare keeps a process-wide registry of cell names: one fresh name per case.
    cell = Cell(fqcn=f"sender{next(_NV_CELLS)}", root_url=url, secure=False, credentials={})
    cell.start()
    deadline = time.monotonic() + 60
    while not cell.is_cell_connected("server"):
        assert time.monotonic() < deadline, "NVFlare cells did not connect"
        time.sleep(0.05)
    times = []
    try:
        for _ in range(repeat):
            started = time.perf_counter()
            if mode == "stream":
                future = cell.send_stream(
                    "bench", "stream", "server", NvMessage(None, Source(data))
                )
            else:
                future = cell.send_blob("bench", "blob", "server", NvMessage(None, data))
            got = results.get(timeout=600)
            times.append(time.perf_counter() - started)
            future.result(timeout=60)
            assert got[2] == size, got
    finally:
        cell.stop()
    return statistics.median(times), _finish(procs, results, 1), 0.0, 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _plain_case(url: str, size: int, repeat: int) -> Measured:
    key = "bench:plain"
    procs, results = _spawn(_plain_receiver, lambda i: (url, key, size, repeat), 1)
    data = memoryview(_payload(size))
    client = redis.Redis.from_url(url)
    times = []
    memory = RedisMemory(url)
    for _ in range(repeat):
        started = time.time()
        for offset in range(0, size, BASE_CHUNK):
            client.xadd(key, {b"d": data[offset : offset + BASE_CHUNK]})
        times.append(results.get(timeout=600)[2] - started)
    redis_mb, redis_cpu = memory.stop(repeat)
    client.delete(key)
    client.close()
    return statistics.median(times), _finish(procs, results, 1), redis_mb, redis_cpu


def _plain_fanout(url: str, size: int, receivers: int, repeat: int) -> Measured:
    """The hardware's fan-out: one pipelined writer, ``receivers`` processes XREADing it all."""
    prefix = f"bench:fan{receivers}"
    args = (url, prefix, size, repeat)
    procs, results = _spawn(_fanout_reader, lambda i: args, receivers)
    data = memoryview(_payload(size))
    client = redis.Redis.from_url(url)
    times, rss, memory = [], 0.0, RedisMemory(url)
    chunk, batch = MB - 1024, 16
    for rep in range(repeat):
        key = f"{prefix}:{rep}"
        started = time.time()
        for first in range(0, size, chunk * batch):
            pipe = client.pipeline(transaction=False)
            for offset in range(first, min(first + chunk * batch, size), chunk):
                pipe.xadd(key, {b"d": data[offset : offset + chunk]})
            pipe.execute()
        ends = [results.get(timeout=600) for _ in range(receivers)]
        times.append(max(end for end, _ in ends) - started)
        rss = max(rss, *(mb for _, mb in ends))
        client.delete(key)
    redis_mb, redis_cpu = memory.stop(repeat)
    client.close()
    for proc in procs:
        proc.join(60)
    return statistics.median(times), rss, redis_mb, redis_cpu


# -- report --------------------------------------------------------------------------------


def _row(
    label: str,
    mode: str,
    size: int,
    n: int,
    m: Measured,
    base: Measured | None,
    nvflare: Measured | None = None,
) -> list[Any]:
    seconds, rss, redis_mb, redis_cpu = m
    mbps = size / MB / seconds
    ratio = f"{base[0] / seconds:.2f}x" if base else "-"
    vs_nv = f"{nvflare[0] / seconds:.2f}x" if nvflare else "-"
    what = f"{label} {mode} {size // MB} MB x{n}"
    print(f"  {what}: {seconds:.2f} s, {mbps:.0f} MB/s, rss {rss:.0f} MB", flush=True)
    cpu = f"{redis_cpu:.2f}" if redis_cpu else "-"
    row = [label, mode, f"{size // MB} MB", n, seconds, mbps, ratio, vs_nv, rss, redis_mb]
    return [*row, cpu]


def _targets(results: Results, sizes: list[int], fan: int) -> list[list[Any]]:
    big = max(sizes)
    rows: list[list[Any]] = []
    for mode, target in (("stream", STREAM_VS_NVFLARE), ("blob", BLOB_VS_NVFLARE)):
        nv = results.get((f"nvflare-{mode}", big, 1))
        if nv is None:
            rows.append([f"{mode} {big // MB} MB >= {target}x NVFlare", "not measured", "NO"])
            continue
        ratio = nv[0] / results[(mode, big, 1)][0]
        rows.append(
            [f"{mode} {big // MB} MB >= {target}x NVFlare", f"{ratio:.2f}x", ratio >= target]
        )
    worst = max(r for (m, _, _), (_, r, _, _) in results.items() if m in ("stream", "fanout"))
    rows.append(
        [
            f"stream receiver RSS <= {STREAM_RSS_MB:.0f} MB",
            f"{worst:.0f} MB",
            worst <= STREAM_RSS_MB,
        ]
    )
    ours = results[("fanout", fan, 4)][0] / results[("fanout", fan, 1)][0]
    plain = results[("plain", fan, 4)][0] / results[("plain", fan, 1)][0]
    rows.append(
        [
            f"fan-out 4 vs 1 receiver ({fan // MB} MB) <= plain redis-py fan-out's {plain:.2f}x",
            f"{ours:.2f}x",
            ours <= plain,
        ]
    )
    return rows


def _marginal(results: Results, fan: int) -> str:
    """What each receiver beyond the first adds, in time and Redis CPU (not a target)."""
    parts = []
    for name, mode in (("StreamCell", "fanout"), ("the plain fan-out", "plain")):
        one, four = results[(mode, fan, 1)], results[(mode, fan, 4)]
        seconds, cpu = (four[0] - one[0]) / 3, (four[3] - one[3]) / 3
        parts.append(f"{name} {seconds:.3f} s ({cpu:.3f} s of Redis CPU)")
    return f"Each receiver beyond the first adds, per {fan // MB} MB transfer: " + "; ".join(parts)


def _measure(
    url: str, sizes: list[int], fan: int, repeat: int, fan_repeat: int
) -> tuple[list[list[Any]], Results]:
    rows: list[list[Any]] = []
    results: Results = {}
    nvflare = importlib.util.find_spec("nvflare") is not None
    for size in sizes:
        base = _plain_case(url, size, repeat)
        rows.append(_row("plain redis-py loop", "XADD/XREAD", size, 1, base, None))
        for mode in ("stream", "blob"):
            nv = _nvflare_case(mode, size, repeat) if nvflare else None
            if nv is not None:
                results[(f"nvflare-{mode}", size, 1)] = nv
                rows.append(_row("NVFlare 2.9 StreamCell (TCP)", mode, size, 1, nv, base))
            results[(mode, size, 1)] = _cell_case(url, mode, size, 1, repeat)
            rows.append(_row("StreamCell", mode, size, 1, results[(mode, size, 1)], base, nv))
    # Both sides of each fan-out ratio are measured back to back, under the same load.
    for n in (1, 4):
        results[("plain", fan, n)] = _plain_fanout(url, fan, n, fan_repeat)
        rows.append(_row("plain fan-out", "XADD/XREAD", fan, n, results[("plain", fan, n)], None))
    for n in (1, 4):
        results[("fanout", fan, n)] = _cell_case(url, "stream", fan, n, fan_repeat)
        rows.append(_row("StreamCell fan-out", "stream", fan, n, results[("fanout", fan, n)], None))
    return rows, results


def run(quick: bool = False) -> str:
    """Run every configuration against one redis-server; return the markdown report."""
    sizes = [16 * MB, 64 * MB] if quick else [64 * MB, 256 * MB, 1024 * MB]
    fan = sizes[1]
    repeat = 1 if quick else 3
    # A ratio of two medians moves twice as much as either: more runs for the fan-out pairs.
    fan_repeat = 1 if quick else 5
    with EmbeddedRedis(fake_fallback=False) as server:
        rows, results = _measure(server.url, sizes, fan, repeat, fan_repeat)
    installed = importlib.util.find_spec("nvflare") is not None
    nvflare = "measured (nvflare 2.9)" if installed else "not installed (pip install '.[bench]')"
    header = ["system", "mode", "payload", "receivers", "seconds", "MB/s", "vs plain loop",
              "vs NVFlare", "receiver peak RSS (MB)", "Redis peak growth (MB)",
              "Redis CPU per transfer (s)"]  # fmt: skip
    checks = [
        [name, value, "yes" if ok else "NO"] for name, value, ok in _targets(results, sizes, fan)
    ]
    return "\n\n".join(
        [
            f"Cross-process transfers through one redis-server, median of {repeat} "
            f"({fan_repeat} for the fan-out rows); NVFlare StreamCell: {nvflare}.",
            table(header, rows),
            table(["target", "measured", "met"], checks),
            _marginal(results, fan) + ".",
        ]
    )

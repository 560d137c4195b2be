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

The configurations of a ratio take turns: each payload size runs one transfer of the
plain loop, NVFlare's and our stream mode, NVFlare's and our blob mode, then again, and
the fan-out cases likewise, their receivers waiting in their processes in between. A
host whose speed drifts during the run (a shared machine does) then moves both sides
of each ratio alike; measured one block after the other, the stream ratio of one build
moved from 0.70x to 0.95x between two runs on one host.

Targets (same-run ratios): stream mode 1 GB >= 0.8x NVFlare; blob mode 1 GB >= 1.0x
NVFlare; receiver peak RSS <= 100 MB in stream mode; fan-out to 4 receivers relative to
one receiver no worse than the plain redis-py fan-out's ratio.
"""

from __future__ import annotations

import abc
import importlib.util
import itertools
import os
import socket
import statistics
import threading
import time
from typing import Any

import psutil
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
#: Redis CPU seconds per transfer, the sender's and receivers' CPU seconds per transfer)
Measured = tuple[float, float, float, float, float]
#: (mode, payload size, receivers) -> measurement
Results = dict[tuple[str, int, int], Measured]


def _payload(size: int) -> bytes:
    block = os.urandom(min(size, 16 * MB)) or b""
    return (block * (size // max(len(block), 1) + 1))[:size]


class RedisMemory:
    """Redis's peak ``used_memory`` growth and its CPU during each transfer.

    A thread samples the memory every 5 ms; :meth:`begin` and :meth:`end` bracket one
    transfer.
    """

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._lock = threading.Lock()
        self._base = self._peak = self._used()
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
            used = self._used()
            with self._lock:
                self._peak = max(self._peak, used)

    def begin(self) -> None:
        """A transfer starts: measure from here."""
        used, cpu = self._used(), self._cpu_seconds()
        with self._lock:
            self._base = self._peak = used
        self._cpu = cpu

    def end(self) -> tuple[float, float]:
        """Peak memory growth (MB) and Redis CPU seconds since :meth:`begin`."""
        cpu = self._cpu_seconds() - self._cpu
        with self._lock:
            return (max(self._peak, self._used()) - self._base) / MB, cpu

    def close(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        self._thread.join()
        self._client.close()


class ClientCpu:
    """CPU seconds of this process (the sender) and the receivers' processes from now."""

    def __init__(self, procs: list[Any]) -> None:
        self._procs = [psutil.Process()] + [psutil.Process(p.pid) for p in procs]
        self._start = self._seconds()

    def _seconds(self) -> float:
        return sum(sum(p.cpu_times()[:2]) for p in self._procs)

    def end(self) -> float:
        """CPU seconds used since construction."""
        return self._seconds() - self._start


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


class Runner(abc.ABC):
    """One configuration: its receivers wait in their processes between transfers.

    The configurations whose times form a ratio run their transfers in turn
    (:func:`_interleaved`), so a machine that slows down or speeds up during the run
    moves both sides of the ratio alike.
    """

    #: Whether the transfer goes through Redis (its CPU and memory are measured).
    via_redis = True
    #: The receivers' processes (their CPU is measured with the sender's).
    procs: list[Any]

    @abc.abstractmethod
    def once(self) -> float:
        """One transfer; its wall time in seconds."""

    @abc.abstractmethod
    def close(self) -> float:
        """Stop the receivers; their peak RSS in MB."""


class CellRunner(Runner):
    """Our StreamCell: a sender cell here, ``receivers`` receiving cells in children."""

    def __init__(self, url: str, mode: str, data: bytes, receivers: int, repeat: int) -> None:
        from framework.connection import RedisConnection

        self.mode, self.data = mode, data
        # Unique names: the runners of one run share the server, and a name is an inbox.
        self.names = [f"{mode}{receivers}-r{i}" for i in range(receivers)]
        self.procs, self.results = _spawn(
            _cell_receiver, lambda i: (url, self.names[i], repeat), receivers
        )
        self.early: list[float] = []
        self.conn = RedisConnection.from_url(url)
        self.cell = StreamCell(self.conn, f"bench-sender-{mode}{receivers}")

    def once(self) -> float:
        size, names = len(self.data), self.names
        started = time.perf_counter()
        if self.mode == "stream":
            message = Message({}, BytesStream(self.data))
            future = self.cell.send_stream("bench", "stream", names, message)
        else:
            future = self.cell.send_blob("bench", "blob", names, Message({}, self.data))
        assert future.result(timeout=600) == size
        seconds = time.perf_counter() - started
        got: list[Any] = []
        while len(got) < len(names):
            item = self.results.get(timeout=120)
            # A receiver done with its last transfer reports its RSS, maybe before
            # another receiver reports its bytes.
            if item[0] == "rss":
                self.early.append(float(item[2]))
            else:
                got.append(item)
        assert all(item[2] == size for item in got), got
        return seconds

    def close(self) -> float:
        self.cell.close()
        self.conn.close()
        return _finish(self.procs, self.results, len(self.names), self.early)


class NvflareRunner(Runner):
    """NVFlare's StreamCell: sender here, the listening receiver in a spawned process."""

    via_redis = False

    def __init__(self, mode: str, data: bytes, repeat: int) -> None:
        from nvflare.fuel.f3.cellnet.cell import Cell

        self.mode, self.data = mode, data
        url = f"tcp://127.0.0.1:{_free_port()}"
        self.procs, self.results = _spawn(_nvflare_receiver, lambda i: (url, repeat), 1)
        # NVFlare keeps a process-wide registry of cell names: one fresh name per runner.
        name = f"sender{next(_NV_CELLS)}"
        self.cell = Cell(fqcn=name, root_url=url, secure=False, credentials={})
        self.cell.start()
        deadline = time.monotonic() + 60
        while not self.cell.is_cell_connected("server"):
            assert time.monotonic() < deadline, "NVFlare cells did not connect"
            time.sleep(0.05)

    def once(self) -> float:
        from nvflare.fuel.f3.message import Message as NvMessage

        started = time.perf_counter()
        if self.mode == "stream":
            source = _nvflare_source(self.data)
            future = self.cell.send_stream("bench", "stream", "server", NvMessage(None, source))
        else:
            future = self.cell.send_blob("bench", "blob", "server", NvMessage(None, self.data))
        got = self.results.get(timeout=600)
        seconds = time.perf_counter() - started
        future.result(timeout=60)
        assert got[2] == len(self.data), got
        return seconds

    def close(self) -> float:
        self.cell.stop()
        return _finish(self.procs, self.results, 1)


def _nvflare_source(data: bytes) -> Any:
    """NVFlare's ``Stream`` over ``data``, handing out views (no copies)."""
    from nvflare.fuel.f3.streaming.stream_types import Stream as NvStream

    class Source(NvStream):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(len(data))
            self.view = memoryview(data)

        def read(self, n: int) -> memoryview:
            out = self.view[self.pos : self.pos + n]
            self.pos += len(out)
            return out

    return Source()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PlainRunner(Runner):
    """The loop most people write first: one XADD per chunk, the reader XREADs and XDELs."""

    def __init__(self, url: str, data: bytes, repeat: int) -> None:
        self.key, self.data = "bench:plain", memoryview(data)
        args = (url, self.key, len(data), repeat)
        self.procs, self.results = _spawn(_plain_receiver, lambda i: args, 1)
        self.client = redis.Redis.from_url(url)

    def once(self) -> float:
        started = time.time()
        for offset in range(0, len(self.data), BASE_CHUNK):
            self.client.xadd(self.key, {b"d": self.data[offset : offset + BASE_CHUNK]})
        return float(self.results.get(timeout=600)[2]) - started

    def close(self) -> float:
        self.client.delete(self.key)
        self.client.close()
        return _finish(self.procs, self.results, 1)


class PlainFanoutRunner(Runner):
    """The hardware's fan-out: one pipelined writer, ``receivers`` processes XREADing it all."""

    def __init__(self, url: str, data: bytes, receivers: int, repeat: int) -> None:
        self.prefix, self.receivers = f"bench:fan{receivers}", receivers
        self.data = memoryview(data)
        args = (url, self.prefix, len(data), repeat)
        self.procs, self.results = _spawn(_fanout_reader, lambda i: args, receivers)
        self.client = redis.Redis.from_url(url)
        self.rep, self.rss = 0, 0.0

    def once(self) -> float:
        key, size = f"{self.prefix}:{self.rep}", len(self.data)
        chunk, batch = MB - 1024, 16
        started = time.time()
        for first in range(0, size, chunk * batch):
            pipe = self.client.pipeline(transaction=False)
            for offset in range(first, min(first + chunk * batch, size), chunk):
                pipe.xadd(key, {b"d": self.data[offset : offset + chunk]})
            pipe.execute()
        ends: list[tuple[float, float]] = [
            self.results.get(timeout=600) for _ in range(self.receivers)
        ]
        self.rss = max(self.rss, *(mb for _, mb in ends))
        self.client.delete(key)
        self.rep += 1
        return max(end for end, _ in ends) - started

    def close(self) -> float:
        self.client.close()
        for proc in self.procs:
            proc.join(60)
        return self.rss


def _interleaved(url: str, runners: dict[tuple[str, int, int], Runner], repeat: int) -> Results:
    """Run one transfer of each runner in turn, ``repeat`` times; close them all."""
    samples: dict[tuple[str, int, int], list[tuple[float, float, float, float]]] = {
        k: [] for k in runners
    }
    rss: dict[tuple[str, int, int], float] = {}
    meter = RedisMemory(url)
    try:
        for rep in range(repeat):
            for key, runner in runners.items():
                clients = ClientCpu(runner.procs)
                if runner.via_redis:
                    meter.begin()
                    seconds = runner.once()
                    samples[key].append((seconds, *meter.end(), clients.end()))
                else:
                    seconds = runner.once()
                    samples[key].append((seconds, 0.0, 0.0, clients.end()))
                if rep == repeat - 1:
                    # At once: its receivers exit after their last transfer, and NVFlare's
                    # sender would keep trying to reconnect to its receiver meanwhile.
                    rss[key] = runner.close()
    finally:
        meter.close()
    return {
        key: (
            statistics.median(s for s, _, _, _ in runs),
            rss[key],
            max(mb for _, mb, _, _ in runs),
            statistics.median(cpu for _, _, cpu, _ in runs),
            statistics.median(cpu for _, _, _, cpu in runs),
        )
        for key, runs in samples.items()
    }


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
    seconds, rss, redis_mb, redis_cpu, _ = m
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
    worst = max(r for (m, _, _), (_, r, *_) in results.items() if m in ("stream", "fanout"))
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
    """What a fan-out costs once and per receiver, in time and CPU (not a target).

    On a host where the transfer is bound by CPU, the 4-vs-1 ratio follows from the
    split: a system whose one-off cost (writing the data into Redis) is small next to
    what each receiver costs scales worse by that ratio, however fast it is.
    """
    parts = []
    for name, mode in (("StreamCell", "fanout"), ("the plain fan-out", "plain")):
        one, four = results[(mode, fan, 1)], results[(mode, fan, 4)]
        seconds = (four[0] - one[0]) / 3
        redis_each, clients_each = (four[3] - one[3]) / 3, (four[4] - one[4]) / 3
        once = one[3] + one[4] - redis_each - clients_each
        parts.append(
            f"{name}: each receiver beyond the first adds {seconds:.3f} s and "
            f"{redis_each + clients_each:.3f} s of CPU ({redis_each:.3f} s of it Redis's); "
            f"the one-off CPU is {once:.3f} s"
        )
    return f"Per {fan // MB} MB transfer, " + "; ".join(parts)


def _measure(
    url: str, sizes: list[int], fan: int, repeat: int, fan_repeat: int
) -> tuple[list[list[Any]], Results]:
    rows: list[list[Any]] = []
    results: Results = {}
    nvflare = importlib.util.find_spec("nvflare") is not None
    for size in sizes:
        data = _payload(size)
        runners: dict[tuple[str, int, int], Runner] = {}
        runners[("loop", size, 1)] = PlainRunner(url, data, repeat)
        for mode in ("stream", "blob"):
            if nvflare:
                runners[(f"nvflare-{mode}", size, 1)] = NvflareRunner(mode, data, repeat)
            runners[(mode, size, 1)] = CellRunner(url, mode, data, 1, repeat)
        results.update(_interleaved(url, runners, repeat))
        base = results[("loop", size, 1)]
        rows.append(_row("plain redis-py loop", "XADD/XREAD", size, 1, base, None))
        for mode in ("stream", "blob"):
            nv = results.get((f"nvflare-{mode}", size, 1))
            if nv is not None:
                rows.append(_row("NVFlare 2.9 StreamCell (TCP)", mode, size, 1, nv, base))
            rows.append(_row("StreamCell", mode, size, 1, results[(mode, size, 1)], base, nv))
        del runners, data
    data = _payload(fan)
    fanout: dict[tuple[str, int, int], Runner] = {}
    for n in (1, 4):
        fanout[("plain", fan, n)] = PlainFanoutRunner(url, data, n, fan_repeat)
        fanout[("fanout", fan, n)] = CellRunner(url, "stream", data, n, fan_repeat)
    results.update(_interleaved(url, fanout, fan_repeat))
    for n in (1, 4):
        rows.append(_row("plain fan-out", "XADD/XREAD", fan, n, results[("plain", fan, n)], None))
    for n in (1, 4):
        rows.append(_row("StreamCell fan-out", "stream", fan, n, results[("fanout", fan, n)], None))
    return rows, results


def run(quick: bool = False) -> str:
    """Run every configuration against one redis-server; return the markdown report."""
    sizes = [16 * MB, 64 * MB] if quick else [64 * MB, 256 * MB, 1024 * MB]
    fan = sizes[1]
    repeat = 1 if quick else 5
    # A ratio of two medians moves twice as much as either: more runs for the fan-out pairs.
    fan_repeat = 1 if quick else 9
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

"""Helpers for the byte-stream tests: receivers that collect, and child-process entry points.

Child processes are spawned, so their entry points live in this importable module and
take only URLs, names and plain values.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from framework.cell import CellConfig, Message, StreamCell, StreamFuture
from framework.cell.streams import BytesStream, IterStream
from framework.connection import RedisConnection

#: Small frames so that tests exercise many chunks and a full window quickly.
SMALL = CellConfig(
    chunk_size=64 * 1024 - 256,
    window=256 * 1024,
    ack_interval=64 * 1024,
    batch_bytes=128 * 1024,
    read_count=4,
    idle_timeout=20,
)


def blocked_in(admin: Any, victim: RedisConnection, command: str) -> list[str]:
    """Addresses of ``victim``'s connections that Redis shows blocked in ``command``."""
    ports = set()
    # A test-only peek at the pools' sockets. The copy is taken in one step: the victim's
    # threads may build a client meanwhile.
    for client in list(victim._clients.values()):
        pool = client.connection_pool
        for connection in [*pool._available_connections, *pool._in_use_connections]:
            if connection._sock is not None:
                ports.add(connection._sock.getsockname()[1])
    return [
        c["addr"]
        for c in admin.client_list()
        if int(c["addr"].rsplit(":", 1)[1]) in ports and c["cmd"] == command and "b" in c["flags"]
    ]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating bytes (so misplaced chunks show)."""
    block = bytes((i * 131 + seed * 7 + (i >> 8)) & 0xFF for i in range(65536 + 17))
    reps = size // len(block) + 1
    return (block * reps)[:size]


@dataclass
class Received:
    """What a collecting callback saw for one transfer."""

    data: bytearray = field(default_factory=bytearray)
    resume: int | None = None
    future: StreamFuture | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Collector:
    """Stream and blob callbacks that record every transfer by stream id."""

    def __init__(self) -> None:
        self.items: dict[int, Received] = {}
        self.any = threading.Event()
        self._lock = threading.Lock()

    def _item(self, sid: int) -> Received:
        with self._lock:
            return self.items.setdefault(sid, Received())

    def stream_cb(
        self, future: StreamFuture, stream: Any, resume: int, read_size: int = 1 << 20
    ) -> None:
        item = self._item(future.get_stream_id())
        item.future, item.resume = future, resume
        try:
            while True:
                chunk = stream.read(read_size)
                if not chunk:
                    break
                item.data += chunk
        except BaseException as exc:
            item.error = exc
            raise
        finally:
            item.done.set()
            self.any.set()

    def blob_cb(self, future: StreamFuture) -> None:
        item = self._item(future.get_stream_id())
        item.future = future
        item.data = future.result()
        item.done.set()
        self.any.set()

    def wait(self, sid: int, timeout: float = 30) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.items.get(sid)
            if item is not None and item.done.wait(0.05):
                return item
            time.sleep(0.01)
        raise AssertionError(f"stream {sid} was not received within {timeout} s")


# -- child processes -----------------------------------------------------------------------


def child_receiver(url: str, name: str, out_path: str, kill_after: int, queue: Any) -> None:
    """Receive streams into ``out_path``; after ``kill_after`` bytes, report and hang."""
    conn = RedisConnection.from_url(url)
    cell = StreamCell(conn, name, config=SMALL)

    def on_stream(future: StreamFuture, stream: Any, resume: int) -> None:
        with open(out_path, "r+b" if os.path.exists(out_path) else "wb") as out:
            out.truncate(resume)
            out.seek(resume)
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
                if out.tell() >= kill_after:
                    queue.put(("received", out.tell()))
                    time.sleep(600)  # wait for SIGKILL

    cell.register_stream_cb("ch", "file", on_stream)
    queue.put(("ready", os.getpid()))
    time.sleep(600)


def child_sender(url: str, target: str, data_size: int, die_after: int, queue: Any) -> None:
    """Send ``payload(data_size)``; the process dies (os._exit) after ``die_after`` bytes."""
    conn = RedisConnection.from_url(url)
    cell = StreamCell(conn, "sender", config=SMALL)
    data = payload(data_size)
    view = BytesStream(data)

    def chunks() -> Any:
        sent = 0
        while True:
            piece = view.read(SMALL.chunk_size)
            if not piece:
                return
            if sent >= die_after:
                time.sleep(0.3)  # let the frames written so far settle
                os._exit(3)
            sent += len(piece)
            yield piece

    future = cell.send_stream(
        "ch", "file", target, Message({"n": 1}, IterStream(chunks(), size=data_size))
    )
    queue.put(("sid", future.get_stream_id()))
    time.sleep(600)

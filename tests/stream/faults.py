"""Helpers of the fault-injection tests: a redis-server a test may kill and restart.

The session server (``redis_server``) is shared, so tests that restart Redis, change
its limits or fill its memory get their own :class:`RedisProcess` on a free port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from framework.exceptions import BackendError, FrameworkError, MessageLossError

T = TypeVar("T")

#: Longest time a helper keeps retrying or waiting.
PATIENCE = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """A private redis-server: start, SIGKILL, restart on the same port (same data dir).

    Args:
        workdir: Its data directory (the append-only file lives there).
        aof: Persist every write (``appendonly yes``, ``appendfsync always``).
    """

    def __init__(self, workdir: Path, *, aof: bool = False) -> None:
        self.workdir = workdir
        self.aof = aof
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProcess:
        """Start the server and wait until it answers."""
        executable = shutil.which("redis-server")
        assert executable is not None
        args = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "yes" if self.aof else "no", "--appendfsync", "always"]
        args += ["--dir", str(self.workdir)]
        log = (self.workdir / "redis.log").open("ab")
        self._process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: self.ping(), what="redis-server to start")
        return self

    def ping(self) -> bool:
        try:
            with self.admin() as admin:
                return bool(admin.ping())
        except redis.exceptions.RedisError:
            return False

    def admin(self) -> redis.Redis:
        """A plain client for test set-up and inspection (not used by the code under test)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def kill(self) -> None:
        """SIGKILL the server: no shutdown, no save."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            self._process = None

    def restart(self, down: float = 0.0) -> None:
        """Kill the server, stay down ``down`` seconds, start it again on the same port."""
        self.kill()
        time.sleep(down)
        self.start()

    def keys_without_ttl(self) -> list[bytes]:
        """Every key that has no TTL (a crash would orphan it)."""
        with self.admin() as admin:
            return [k for k in admin.scan_iter("*") if admin.pttl(k) == -1]

    def close(self) -> None:
        self.kill()


def wait_for(check: Callable[[], Any], *, what: str, patience: float = PATIENCE) -> None:
    """Poll ``check`` until it is true; fail after ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"Timed out waiting for {what}.")
        time.sleep(0.02)


def retrying(action: Callable[[], T], *, patience: float = PATIENCE) -> T:
    """Run ``action`` until it does not raise a BackendError (Redis down or refusing)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return action()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def send_all(producer: Any, topic: str, objs: list[Any], on_sent: Callable[[int], None]) -> None:
    """Send each object once; after a failed send, flush until its batch is out."""
    for index, obj in enumerate(objs):
        try:
            producer.send(topic, obj)
        except BackendError:
            retrying(producer.flush)
        on_sent(index)


class Collector:
    """Consume a stream in a thread: objects, losses and failures, until the stream ends."""

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        self.objects: list[Any] = []
        self.losses: list[MessageLossError] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-collector", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    self.objects.append(self.consumer.next_object())
                except StopIteration:
                    return
                except MessageLossError as loss:
                    self.losses.append(loss)
                except BackendError:
                    time.sleep(0.05)  # Redis down: the item is kept, try again
        except BaseException as exc:  # handed to the test by result()
            self.error = exc

    @property
    def running(self) -> bool:
        """Whether the consumer is still consuming (neither ended nor failed)."""
        return self._thread.is_alive()

    def wait_count(self, count: int) -> None:
        wait_for(lambda: len(self.objects) >= count or self.error, what=f"{count} objects")

    def result(self) -> list[Any]:
        self._thread.join(PATIENCE)
        assert not self._thread.is_alive(), "the consumer did not finish"
        if self.error is not None:
            raise self.error
        return self.objects


def objects_and_errors(consumer: Any, errors: list[Exception] | None = None) -> list[Any]:
    """Every object up to the end of the stream; the type of each framework error in its place.

    The errors themselves are appended to ``errors`` if given.
    """
    got: list[Any] = []
    while True:
        try:
            got.append(consumer.next_object())
        except StopIteration:
            return got
        except FrameworkError as exc:
            got.append(type(exc))
            if errors is not None:
                errors.append(exc)


def payload(index: int, size: int = 64) -> bytes:
    """``size`` bytes that start with ``index``."""
    return index.to_bytes(4, "big") + b"\x5a" * max(0, size - 4)


def indexes(objs: list[bytes]) -> list[int]:
    return [int.from_bytes(obj[:4], "big") for obj in objs]

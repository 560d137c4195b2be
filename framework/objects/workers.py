"""A small pool of named worker threads with a bounded, joinable shutdown.

``concurrent.futures.ThreadPoolExecutor`` cannot join its threads under a deadline, and
the engine must never hang in ``close()`` on a consumer that does not return. This
module does no I/O.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["WorkerPool"]

logger = logging.getLogger(__name__)

_STOP = object()


class WorkerPool:
    """Runs submitted callables on ``size`` threads named ``<name>-<n>``.

    Args:
        name: Thread name prefix.
        size: Number of threads (started on first use).
    """

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self._idle = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> bool:
        """Queue ``fn(*args)``; False (and not queued) once the pool is closed."""
        with self._lock:
            if self._closed:
                return False
            if self._idle <= 0 and len(self._threads) < self.size:
                self._spawn()  # every thread is busy: grow up to size
            self._idle -= 1  # claimed by this task (a thread about to wait counts it back)
            self._queue.put((fn, args))
            return True

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            if item is _STOP:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # thread boundary: a task's failure must not kill the worker
                logger.exception("A task of %s failed.", self.name)

    def close(self, deadline: float) -> None:
        """Run what is queued, then stop and join the threads until ``deadline``."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(_STOP)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("Workers %s are still running after close.", alive)

"""One thread per received transfer: runs the stream callback, or receives a blob then calls back.

A stream callback runs as ``stream_cb(future, stream, resume_offset, *args, **kwargs)`` in
the worker's own thread and may block. A blob callback runs as
``blob_cb(future, *args, **kwargs)`` once the whole blob has arrived (the behaviour
NVFlare's docstring promises); a failed blob transfer is reported to the sender and
does not call it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from framework.cell.receiver import RxHandle, RxStream, RxTransfer, receive_blob
from framework.cell.types import StreamFuture
from framework.exceptions import StreamError

__all__ = ["Handler", "RxWorker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handler:
    """A registered callback and the extra arguments it is called with."""

    mode: Literal["stream", "blob"]
    callback: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


class RxWorker:
    """Receives one transfer in a thread named ``fw-cell-rx-<sid>``.

    Args:
        rx: The receiver's transfer.
        handler: The callback registered for the transfer's channel and topic.
        entry_id: The announcement's inbox entry, settled by ``on_done``.
        max_blob_size: Largest blob accepted.
        on_done: Called from the worker thread when it ends (successfully or not).
    """

    def __init__(
        self,
        rx: RxTransfer,
        handler: Handler,
        entry_id: bytes,
        max_blob_size: int,
        on_done: Callable[[RxWorker], None],
    ) -> None:
        self.rx = rx
        self.handler = handler
        self.entry_id = entry_id
        self.max_blob_size = max_blob_size
        self.on_done = on_done
        ann = rx.announce
        self.future = StreamFuture(ann.sid, dict(ann.headers), RxHandle())
        self.future.set_size(ann.size)
        self.future.set_progress(rx.decoder.offset)
        self.thread = threading.Thread(target=self._run, name=f"fw-cell-rx-{ann.sid}", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self.thread.start()

    def join(self, timeout: float | None) -> None:
        """Wait for the worker thread."""
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _run(self) -> None:
        try:
            if self.handler.mode == "stream":
                self._stream()
            else:
                self._blob()
        except Exception:  # thread boundary: log and settle the future, never die silently
            logger.exception("Receiving stream %s failed unexpectedly.", self.rx.sid)
            self.future.set_exception(StreamError(f"Receiving stream {self.rx.sid} failed."))
        finally:
            self.on_done(self)

    def _stream(self) -> None:
        stream = RxStream(self.rx, self.future)
        assert isinstance(self.future.task_handle, RxHandle)
        self.future.task_handle.stream = stream
        h = self.handler
        try:
            h.callback(self.future, stream, self.rx.decoder.offset, *h.args, **h.kwargs)
        except Exception as exc:  # noqa: BLE001 - user code: the failure goes to the sender
            if not self.future.done():
                logger.warning("The stream callback for stream %s raised %r.", self.rx.sid, exc)
            stream.fail(exc)
        else:
            stream.finish()

    def _blob(self) -> None:
        try:
            blob = receive_blob(self.rx, self.future, self.max_blob_size)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the sender
            if not self.rx.abandoned:
                logger.warning("Receiving blob stream %s failed: %s", self.rx.sid, exc)
            self.rx.fail(exc)
            self.future.set_exception(exc)
            return
        self.future.set_result(blob)
        h = self.handler
        try:
            h.callback(self.future, *h.args, **h.kwargs)
        except Exception:
            # The blob arrived intact; a failing application callback is its own bug.
            logger.exception("The blob callback for stream %s raised.", self.rx.sid)

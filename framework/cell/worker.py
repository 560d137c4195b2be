"""One thread per received transfer: runs the stream callback, or receives a blob then calls back.

A stream callback runs as ``stream_cb(future, stream, resume_offset, *args, **kwargs)`` in
the worker's own thread and may block; the final acknowledgement is posted when it
returns, so an exception it raises at any point, also after the last byte, fails the
sender's future. A blob callback runs as ``blob_cb(future, *args, **kwargs)`` once the
whole blob has arrived and passed its size checks (the behaviour NVFlare's docstring
promises), and the final acknowledgement likewise waits for its return: an exception it
raises fails the sender's future (NVFlare 2.9 stops the transfer so the sender hears of
it, when it still can). Before the first byte, an optional ``preflight_cb(future)`` may
reject the blob. A failed or rejected blob is reported to the sender and never reaches
``blob_cb``. While a callback runs, the receiver tells the sender it is alive.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from framework.cell.assembler import BlobBuffer
from framework.cell.frames import HEADER_FIELD, ChunkHeader
from framework.cell.receiver import RxHandle, RxStream, RxTransfer
from framework.cell.types import MessageHeaderKey, StreamFuture
from framework.cell.window import Position
from framework.exceptions import ConfigurationError, StreamError

__all__ = ["Handler", "RxWorker", "check_callable", "receive_blob"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Handler:
    """A registered callback and the extra arguments it is called with."""

    mode: Literal["stream", "blob"]
    callback: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Blob mode: ``preflight_cb(future) -> bool`` decides before the first byte.
    preflight: Callable[[StreamFuture], Any] | None = None


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
        headers = {
            **ann.headers,
            MessageHeaderKey.ORIGIN: ann.origin,
            MessageHeaderKey.CHANNEL: ann.channel,
            MessageHeaderKey.TOPIC: ann.topic,
        }
        self.future = StreamFuture(ann.sid, headers, RxHandle())
        self.future.set_size(ann.size)
        self.future.set_progress(rx.decoder.offset)
        self.thread = threading.Thread(target=self._run, name=f"fw-cell-rx-{ann.sid}", daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.handler.mode == "stream":
                self._stream()
            else:
                self._blob()
        except Exception as exc:  # thread boundary: report and settle, never die silently
            logger.exception("Receiving %s failed unexpectedly.", self.rx.name)
            self.rx.fail(exc)
            self.future.set_exception(StreamError(f"Receiving {self.rx.name} failed: {exc}"))
        finally:
            self.rx.close()
            self.on_done(self)

    def _stream(self) -> None:
        stream = RxStream(self.rx, self.future)
        assert isinstance(self.future.task_handle, RxHandle)
        self.future.task_handle.stream = stream
        h = self.handler
        try:
            with self._keepalive():
                h.callback(self.future, stream, self.rx.decoder.offset, *h.args, **h.kwargs)
        except Exception as exc:  # noqa: BLE001 - user code: the failure goes to the sender
            if not self.rx.ended:
                logger.warning("The stream callback for %s raised %r.", self.rx.name, exc)
            stream.fail(exc)
        else:
            stream.finish()

    @contextlib.contextmanager
    def _keepalive(self) -> Iterator[None]:
        """Beat for the receiver while the block runs (see :meth:`RxTransfer.beat`).

        The beats come from a thread of their own (``fw-cell-rx-alive-<sid>``), stopped
        and joined when the block ends: the callback may work for any time without
        reading, and the sender must not take that for a dead receiver.
        """
        stop = threading.Event()
        every = self.rx.config.heartbeat

        def run() -> None:
            while not stop.wait(every) and not self.rx.stopping.is_set():
                try:
                    self.rx.beat()
                except Exception as exc:  # noqa: BLE001 - the next beat tries again
                    logger.debug("A heartbeat of %s was not posted: %s", self.rx.name, exc)

        name = f"fw-cell-rx-alive-{self.rx.sid}"
        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _blob(self) -> None:
        try:
            self._preflight()
            blob = receive_blob(self.rx, self.future, self.max_blob_size)
        except Exception as exc:  # noqa: BLE001 - any failure must reach the sender
            if not self.rx.abandoned:
                logger.warning("Receiving blob %s failed: %s", self.rx.name, exc)
            self.rx.fail(exc)
            self.future.set_exception(exc)
            return
        self.future.set_result(blob)
        h = self.handler
        try:
            with self._keepalive():
                h.callback(self.future, *h.args, **h.kwargs)
        except Exception as exc:  # noqa: BLE001 - user code: the failure goes to the sender
            logger.warning("The blob callback for %s raised %r.", self.rx.name, exc)
            self.rx.fail(exc)
            return
        self.rx.complete()

    def _preflight(self) -> None:
        check = self.handler.preflight
        if check is None:
            return
        try:
            accepted = check(self.future)
        except Exception as exc:
            raise StreamError(
                f"The preflight check of cell {self.rx.me!r} rejected blob {self.rx.name}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if accepted is False:
            raise StreamError(
                f"The preflight check of cell {self.rx.me!r} rejected blob {self.rx.name}."
            )


def receive_blob(rx: RxTransfer, future: StreamFuture, max_size: int) -> bytearray:
    """Receive a whole blob and check its size (the caller posts the final acknowledgement).

    Args:
        rx: The receiver's transfer (must start at the beginning).
        future: Receives progress updates.
        max_size: Largest blob accepted (also when its size was not announced).

    Returns:
        The blob.

    Raises:
        BlobSizeError: The blob is larger than ``max_size`` (the sender hears of it).
        StreamError: The transfer failed or cannot resume (see :meth:`RxTransfer.fetch`).
    """
    if rx.decoder.offset:
        raise StreamError(
            f"Blob {rx.name} was interrupted at byte {rx.decoder.offset} by a receiver "
            "restart; a blob cannot resume at a receiver (its first part died with the old "
            "process). Send it again."
        )
    blob = BlobBuffer(rx.sid, rx.announce.size, max_size)
    placer = None if rx.decoder.cipher is not None else _Placer(blob)
    while not rx.decoder.finished:
        if placer is not None:
            # Chunk bodies are read straight into the blob: room for one XREAD batch.
            blob.reserve(rx.read_count * rx.announce.chunk_size)
            placer.expect(rx.decoder.next_seq, rx.decoder.offset)
        for header, plain in rx.fetch(placer):
            blob.write(header.off, plain)
            rx.consumed(Position(header.seq, header.off + header.len), header.last)
        future.set_progress(rx.decoder.offset)
    return blob.release()


class _Placer:
    """Picks the place in the blob of each chunk body of a plain transfer, as it is read.

    Only the chunk that continues the blob gets a place (duplicates and anything out of
    order go to a buffer of their own and meet the decoder's checks); a placed chunk is
    verified (length, CRC-32C) like any other before it counts. Only an entry in the
    sender's layout (header, then body, nothing else) is placed: its header is the one
    the decoder checks, so the body is accepted for the very place it was read to.
    """

    def __init__(self, blob: BlobBuffer) -> None:
        self.blob = blob
        self.seq = 0
        self.off = 0

    def expect(self, seq: int, off: int) -> None:
        """The next chunk the decoder will accept."""
        self.seq, self.off = seq, off

    def __call__(self, fields: list[Any], size: int) -> memoryview | None:
        if len(fields) != 3 or fields[0] != HEADER_FIELD:
            return None
        try:
            header = ChunkHeader.model_validate_json(fields[1])
        except ValidationError:
            return None  # the decoder reports it
        if (header.seq, header.off, header.wlen) != (self.seq, self.off, size) or header.nonce:
            return None
        view = self.blob.slot(header.off, size)
        if view is not None:
            self.seq, self.off = self.seq + 1, self.off + size
        return view


def check_callable(
    what: str, callback: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """Fail at registration, not later in a worker thread, if ``callback`` cannot take these.

    Raises:
        ConfigurationError: If ``callback`` is not callable or its signature rejects them.
    """
    if not callable(callback):
        raise ConfigurationError(f"{what} must be callable, not {type(callback).__name__}.")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # builtins without a signature: trust them
        return
    try:
        signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise ConfigurationError(
            f"{what} {getattr(callback, '__qualname__', callback)!r} cannot be called with "
            f"{len(args)} positional argument(s) and keywords {sorted(kwargs)}: {exc}."
        ) from exc

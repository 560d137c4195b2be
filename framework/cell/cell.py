"""``StreamCell``: NVFlare F3's byte-stream cell over Redis.

A cell is named; other cells send to that name. Sending stores the announcement in the
transfer's meta hash, appends it to every target's durable inbox and starts a sender
thread; the chunk frames go into Redis once however many targets read them. Receiving
starts with the first ``register_*_cb`` call: a thread reads the cell's inbox (first its
unfinished announcements, so a restarted cell resumes them) and runs every transfer in
its own ``fw-cell-rx-<sid>`` thread.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.dispatch import Dispatcher
from framework.cell.frames import Announce
from framework.cell.inbox import announce
from framework.cell.sender import TxTask
from framework.cell.streams import as_stream
from framework.cell.transport import TransferIO
from framework.cell.types import Message, Stream, StreamFuture
from framework.cell.window import Position
from framework.cell.worker import Handler
from framework.connection import RedisConnection
from framework.exceptions import ClosedError, ConfigurationError, StreamError

__all__ = ["StreamCell"]

logger = logging.getLogger(__name__)

Target = str | Sequence[str]


class StreamCell:
    """Sends and receives byte streams and blobs between named cells through Redis.

    Args:
        connection: The Redis connection (not closed by the cell).
        name: This cell's name; senders address it, and a restarted cell with the same
            name resumes the transfers the old one did not finish.
        config: Chunk size, window, batch sizes and timeouts.
        key: Shared AES key (16, 24 or 32 bytes) for ``secure=True`` transfers.

    Raises:
        ConfigurationError: If the name cannot be used in a key.
    """

    def __init__(
        self,
        connection: RedisConnection,
        name: str,
        *,
        config: CellConfig | None = None,
        key: bytes | None = None,
    ) -> None:
        self.conn = connection
        self.name = name
        self.config = config or CellConfig()
        self._key = key
        self._tx: dict[int, TxTask] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Building the dispatcher validates the name (it becomes part of the inbox key).
        self._dispatcher = Dispatcher(connection, name, self.config, self._cipher, self._stopping)

    def get_chunk_size(self) -> int:
        """Bytes per chunk frame."""
        return self.config.chunk_size

    # -- sending -----------------------------------------------------------------------

    def send_stream(
        self,
        channel: str,
        topic: str,
        target: Target,
        message: Message,
        secure: bool = False,
        optional: bool = False,
    ) -> StreamFuture:
        """Send a byte stream to one target or several; returns at once.

        Args:
            channel: Channel of the stream.
            topic: Topic of the stream.
            target: A cell name, or a list of them (the data is written to Redis once).
            message: Headers (JSON-serialisable) and a :class:`Stream` payload.
            secure: Encrypt chunks end to end with the cell's key.
            optional: Failures are logged at debug level only.

        Returns:
            A future whose result is the number of bytes every target received.

        Raises:
            StreamError: If the payload is not a Stream or the headers are not JSON.
            EncryptionError: If ``secure`` and no key or no ``cryptography``.
            ClosedError: If the cell is closed.
            BackendError: If Redis fails while announcing.
        """
        if not isinstance(message.payload, Stream):
            raise StreamError(
                f"send_stream needs a Stream payload, not {type(message.payload).__name__}."
            )
        return self._send(
            "stream", channel, topic, target, message, message.payload, secure, optional
        )

    def send_blob(
        self,
        channel: str,
        topic: str,
        target: Target,
        message: Message,
        secure: bool = False,
        optional: bool = False,
    ) -> StreamFuture:
        """Send a blob (bytes-like payload, or a list of them); the receiver gets it whole.

        Args:
            channel: Channel of the blob.
            topic: Topic of the blob.
            target: A cell name, or a list of them.
            message: Headers and a bytes-like payload (not copied: do not change it).
            secure: Encrypt chunks end to end with the cell's key.
            optional: Failures are logged at debug level only.

        Returns:
            A future whose result is the number of bytes sent.

        Raises:
            StreamError: If the payload is not bytes-like or the headers are not JSON.
            EncryptionError: If ``secure`` and no key or no ``cryptography``.
            ClosedError: If the cell is closed.
            BackendError: If Redis fails while announcing.
        """
        return self._send(
            "blob", channel, topic, target, message, as_stream(message.payload), secure, optional
        )

    def resume_send(self, stream_id: int, message: Message) -> StreamFuture:
        """Continue sending a transfer whose sender died, from where its frames stop.

        Channel, topic, targets and mode come from the stored announcement; the payload
        must be the same data and seekable (a Stream, or bytes-like for a blob).

        Args:
            stream_id: The id from the original future's ``get_stream_id()``.
            message: The original payload; its headers are ignored.

        Returns:
            A new future for the rest of the transfer (its result counts all bytes).

        Raises:
            StreamError: If the transfer is gone (finished, failed or expired) or the
                source cannot seek.
        """
        self._check_open()
        io = TransferIO(self.conn, stream_id, self.config.ttl)
        ann = io.load()
        if ann is None:
            raise StreamError(f"Stream {stream_id} cannot resume: it finished, failed or expired.")
        source = as_stream(message.payload)
        start, finished = self._resume_point(io, ann)
        if start.off:
            source.seek(start.off)
        logger.info("Resuming stream %s at byte %d.", stream_id, start.off)
        return self._start_tx(io, ann, source, self._cipher(ann.secure), start, finished)

    def _send(
        self,
        mode: Literal["stream", "blob"],
        channel: str,
        topic: str,
        target: Target,
        message: Message,
        source: Stream,
        secure: bool,
        optional: bool,
    ) -> StreamFuture:
        self._check_open()
        targets = [target] if isinstance(target, str) else list(dict.fromkeys(target))
        if not targets:
            raise ConfigurationError(f"send_{mode} needs at least one target.")
        cipher = self._cipher(secure)
        fields = {"channel": channel, "topic": topic, "mode": mode, "secure": secure}
        ann = self._announcement(fields, targets, message, source, optional)
        io = TransferIO(self.conn, ann.sid, self.config.ttl)
        io.create(ann)
        for name in targets:
            announce(self.conn, name, ann, self.config.inbox_ttl)
        return self._start_tx(io, ann, source, cipher)

    def _announcement(
        self,
        fields: dict[str, Any],
        targets: list[str],
        message: Message,
        source: Stream,
        optional: bool,
    ) -> Announce:
        headers = {**(source.get_headers() or {}), **message.headers}
        try:
            ann = Announce(
                sid=secrets.randbits(62) + 1,
                origin=self.name,
                size=source.get_size(),
                headers=headers,
                targets=targets,
                chunk_size=self.config.chunk_size,
                window=self.config.window,
                optional=optional,
                **fields,
            )
            ann.model_dump_json()  # headers must survive JSON before anything is written
        except (ValidationError, PydanticSerializationError) as exc:
            raise StreamError(
                f"Cannot announce a {fields['mode']} to {targets}: "
                f"headers must be JSON-serialisable ({exc})."
            ) from exc
        return ann

    def _start_tx(
        self,
        io: TransferIO,
        ann: Announce,
        source: Stream,
        cipher: ChunkCipher | None,
        start: Position | None = None,
        finished: bool = False,
    ) -> StreamFuture:
        future = StreamFuture(ann.sid, dict(ann.headers))
        future.set_size(ann.size)
        task = TxTask(io, ann, source, future, self.config, cipher, start, finished)
        future.task_handle = task
        future.set_progress(task.window.sent.off)
        with self._lock:
            for sid in [s for s, t in self._tx.items() if not t.thread.is_alive()]:
                del self._tx[sid]
            self._tx[ann.sid] = task
        task.start()
        return future

    @staticmethod
    def _resume_point(io: TransferIO, ann: Announce) -> tuple[Position, bool]:
        last = io.last_frame()
        if last is not None:
            return Position(last.seq, last.off + last.len), last.last
        # Every written frame was consumed and trimmed: continue after the slowest ack.
        return min(io.acked(t) for t in ann.targets), False

    def _cipher(self, secure: bool) -> ChunkCipher | None:
        return ChunkCipher(self._key) if secure else None

    # -- receiving ---------------------------------------------------------------------

    def register_stream_cb(
        self, channel: str, topic: str, stream_cb: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Register ``stream_cb(future, stream, resume_offset, *args, **kwargs)``.

        The callback runs in its own thread when a stream starts and may block while it
        reads ``stream``. ``resume_offset`` is 0 for a new stream and the last
        acknowledged offset when a restarted cell resumes one; the stream continues there.
        Returning before the end closes the stream (the sender gets ``StreamCancelled``);
        raising reports the error to the sender.
        """
        self._register(channel, topic, Handler("stream", stream_cb, args, kwargs))

    def register_blob_cb(
        self, channel: str, topic: str, blob_cb: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Register ``blob_cb(future, *args, **kwargs)``, called once the whole blob arrived.

        ``future.result()`` is the blob (a ``bytearray`` allocated once at its size).
        """
        self._register(channel, topic, Handler("blob", blob_cb, args, kwargs))

    def _register(self, channel: str, topic: str, handler: Handler) -> None:
        self._check_open()
        self._dispatcher.register(channel, topic, handler)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Stop the cell: cancel unfinished sends, abandon unfinished receives, join threads.

        Abandoned receives stay pending in the inbox, so a new cell with this name
        resumes them. Idempotent; the connection stays open.
        """
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            senders = list(self._tx.values())
        for task in senders:
            task.stop()
        deadline = time.monotonic() + self.config.close_timeout
        threads = [t.thread for t in senders] + self._dispatcher.threads()
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            logger.warning("Cell %r closed but threads %s are still running.", self.name, alive)

    def _check_open(self) -> None:
        if self._stopping.is_set():
            raise ClosedError(f"The stream cell {self.name!r} is closed.")

    def __enter__(self) -> StreamCell:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self._stopping.is_set() else ""
        return f"<StreamCell {self.name!r} on {self.conn.url()}{state}>"

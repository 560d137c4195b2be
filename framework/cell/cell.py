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
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from framework.cell._sending import Sending, Target
from framework.cell.auth import ControlAuth
from framework.cell.config import CellConfig
from framework.cell.crypto import AES_KEY_SIZES, ChunkCipher
from framework.cell.dispatch import Dispatcher
from framework.cell.sender import TxTask
from framework.cell.streams import as_stream
from framework.cell.transport import TransferIO
from framework.cell.types import Message, Stream, StreamFuture
from framework.cell.worker import Handler, check_callable
from framework.connection import RedisConnection
from framework.exceptions import ClosedError, ConfigurationError, EncryptionError, StreamError

__all__ = ["StreamCell"]

logger = logging.getLogger(__name__)


class StreamCell(Sending):
    """Sends and receives byte streams and blobs between named cells through Redis.

    Args:
        connection: The Redis connection (not closed by the cell).
        name: This cell's name; senders address it, and a restarted cell with the same
            name resumes the transfers the old one did not finish.
        config: Chunk size, window, batch sizes, timeouts, ``require_secure``.
        key: Shared AES key (16, 24 or 32 bytes) for ``secure=True`` transfers; it also
            authenticates their control messages (acks, cancel, close, error).

    Raises:
        ConfigurationError: If the name cannot be used in a key, the key is not 16, 24 or
            32 bytes, or ``require_secure`` is set without a key.
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
        if self.config.require_secure and key is None:
            raise ConfigurationError(
                f"Cell {name!r} has require_secure=True but no key: pass key=<16, 24 or 32 bytes>."
            )
        if key is not None and (not isinstance(key, bytes) or len(key) not in AES_KEY_SIZES):
            # Said now, not at the first secure send or receive.
            size = f"{len(key)} bytes" if isinstance(key, bytes) else f"a {type(key).__name__}"
            raise ConfigurationError(
                f"Cell {name!r}: key must be an AES key of 16, 24 or 32 bytes, not {size}."
            )
        self._key = key
        self._tx: dict[int, TxTask] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Building the dispatcher validates the name (it becomes part of the inbox key).
        self._dispatcher = Dispatcher(
            connection, name, self.config, self._security, self._stopping, key
        )

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
        reliable: bool | None = None,
    ) -> StreamFuture:
        """Send a byte stream to one target or several; returns at once.

        Args:
            channel: Channel of the stream.
            topic: Topic of the stream.
            target: A cell name, or a list of them (the data is written to Redis once).
            message: Headers (JSON-serialisable) and a :class:`Stream` payload.
            secure: Encrypt chunks end to end with the cell's key.
            optional: Failures are logged at debug level only.
            reliable: Accepted for NVFlare call sites and ignored: every transfer is
                reliable (acknowledged, resumable, checksummed).

        Returns:
            A future whose result is the number of bytes every target received.

        Raises:
            StreamError: If the payload is not a Stream or the headers are not JSON.
            EncryptionError: If ``secure`` and no key or no ``cryptography``, or not
                ``secure`` on a cell with ``require_secure``.
            ClosedError: If the cell is closed.
            BackendError: If Redis fails while announcing.
        """
        _check_message("send_stream", message)
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
        reliable: bool | None = None,
    ) -> StreamFuture:
        """Send a blob; the receiver gets it whole, as one ``bytearray``.

        Args:
            channel: Channel of the blob.
            topic: Topic of the blob.
            target: A cell name, or a list of them.
            message: Headers and a payload: bytes-like (not copied: do not change it), a
                list of them, or a :class:`Stream` (its size may be unknown; receivers
                accept up to their ``max_blob_size``).
            secure: Encrypt chunks end to end with the cell's key.
            optional: Failures are logged at debug level only.
            reliable: Accepted for NVFlare call sites and ignored (always reliable).

        Returns:
            A future whose result is the number of bytes sent.

        Raises:
            StreamError: If the payload is not bytes-like or the headers are not JSON.
            EncryptionError: If ``secure`` and no key or no ``cryptography``, or not
                ``secure`` on a cell with ``require_secure``.
            ClosedError: If the cell is closed.
            BackendError: If Redis fails while announcing.
        """
        _check_message("send_blob", message)
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
            MalformedFrameError: If the stored announcement (``BadAnnouncementError``:
                on a cell with a key, it is not authenticated with the key) or a stored
                position (``BadPositionError``) is forged or unreadable.
            EncryptionError: If the transfer is plaintext and the cell has
                ``require_secure``.
        """
        self._check_open()
        io = TransferIO(self.conn, stream_id, self.config.ttl)
        ann = io.load(self._key)  # a cell with a key signed it: forged ones are refused
        if ann is None:
            raise StreamError(f"Stream {stream_id} cannot resume: it finished, failed or expired.")
        if self.config.require_secure and not ann.secure:
            raise EncryptionError(
                f"Cell {self.name!r} sends only encrypted transfers (require_secure=True): "
                f"stream {stream_id} is plaintext and cannot resume here."
            )
        ended = io.ended()
        if ended is not None:  # its keys linger a while after a cancel or an error
            raise StreamError(f"Stream {stream_id} cannot resume: it ended ({ended}).")
        source = as_stream(message.payload)
        cipher, auth = self._security(ann.secure, stream_id)
        io.auth = auth  # before reading the receivers' positions: they are signed too
        start, finished = self._resume_point(io, ann)
        if start.off:
            source.seek(start.off)
        logger.info("Resuming stream %s at byte %d.", stream_id, start.off)
        return self._start_tx(io, ann, source, cipher, start, finished)

    def _security(self, secure: bool, sid: int) -> tuple[ChunkCipher | None, ControlAuth | None]:
        """The chunk cipher and control authenticator of a transfer (None when plain)."""
        if not secure:
            return None, None
        cipher = ChunkCipher(self._key)  # raises EncryptionError without a key
        assert self._key is not None
        return cipher, ControlAuth(self._key, sid)

    # -- receiving ---------------------------------------------------------------------

    def register_stream_cb(
        self, channel: str, topic: str, stream_cb: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        """Register ``stream_cb(future, stream, resume_offset, *args, **kwargs)``.

        The callback runs in its own thread when a stream starts and may block while it
        reads ``stream``. ``resume_offset`` is 0 for a new stream and the last
        acknowledged offset when a restarted cell resumes one; the stream continues there.
        The sender's future succeeds only once the callback has returned; returning before
        the end closes the stream (the sender gets ``StreamCancelled``), and raising, at
        any point, reports the error to the sender.

        Raises:
            ConfigurationError: If ``stream_cb`` cannot be called with these arguments.
        """
        check_callable("stream_cb", stream_cb, (None, None, 0, *args), kwargs)
        self._register(channel, topic, Handler("stream", stream_cb, args, kwargs))

    def register_blob_cb(
        self,
        channel: str,
        topic: str,
        blob_cb: Callable[..., Any],
        *args: Any,
        preflight_cb: Callable[[StreamFuture], Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Register ``blob_cb(future, *args, **kwargs)``, called once the whole blob arrived.

        ``future.result()`` is the blob (a ``bytearray``). ``preflight_cb(future)``, if
        given, runs before the first byte is received, with the announcement's headers
        and size on ``future``; returning False or raising rejects the blob, and the
        sender's future fails with a ``StreamError`` saying so.

        Raises:
            ConfigurationError: If ``blob_cb`` or ``preflight_cb`` cannot be called so.
        """
        check_callable("blob_cb", blob_cb, (None, *args), kwargs)
        if preflight_cb is not None:
            check_callable("preflight_cb", preflight_cb, (None,), {})
        handler = Handler("blob", blob_cb, args, kwargs, preflight_cb)
        self._register(channel, topic, handler)

    def _register(self, channel: str, topic: str, handler: Handler) -> None:
        self._check_open()
        self._dispatcher.register(channel, topic, handler)

    @property
    def name_taken_by(self) -> str | None:
        """Who receives under this cell's name since another cell took it, else None.

        A cell out of touch with Redis for longer than its lease (frozen, say) may find
        its name taken by another cell; it then takes no new transfers until the name
        is free again (this is ``"host:pid:token"`` of the holder meanwhile).
        """
        return self._dispatcher.name_taken_by

    @property
    def receiving_fails(self) -> str | None:
        """Why this cell cannot read its inbox (Redis unreachable, say), else None.

        The cell retries on its own, and transfers announced meanwhile wait in the inbox;
        this tells a caller that nothing new can arrive until it reads ``None`` again
        (``"BackendUnavailable: Could not read inbox ..."``).
        """
        return self._dispatcher.inbox_failing

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
        threads = [t for task in senders for t in task.threads()] + self._dispatcher.threads()
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


def _check_message(method: str, message: Any) -> None:
    if not isinstance(message, Message):
        raise StreamError(
            f"{method} takes a Message(headers, payload), not a {type(message).__name__}."
        )

"""The byte-stream API types, named and shaped after NVFlare F3's ``stream_types``.

:class:`Stream` is a read-only byte source, :class:`StreamFuture` follows a transfer
(modelled on :class:`concurrent.futures.Future`), :class:`StreamTaskSpec` is the handle a
future uses to cancel its transfer and :class:`Message` carries headers plus a payload.
``StreamError`` and ``StreamCancelled`` come from :mod:`framework.exceptions` and are
re-exported here so NVFlare imports map one to one.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from framework.exceptions import StreamCancelled, StreamError

__all__ = [
    "Message",
    "MessageHeaderKey",
    "Stream",
    "StreamCancelled",
    "StreamError",
    "StreamFuture",
    "StreamTaskSpec",
]

logger = logging.getLogger(__name__)

#: What :meth:`Stream.read` may return (NVFlare also allows a list of buffers).
ReadResult = bytes | bytearray | memoryview


class MessageHeaderKey:
    """The headers of NVFlare's ``MessageHeaderKey`` that a receiver's future carries.

    NVFlare code reads the sender of a transfer as
    ``future.headers.get(MessageHeaderKey.ORIGIN)``; the receiving cell sets these
    three from the announcement (the names are NVFlare's).
    """

    ORIGIN = "cn__origin"
    CHANNEL = "cn__channel"
    TOPIC = "cn__topic"


class Message:
    """Headers plus a payload, as NVFlare's cellnet ``Message``.

    Args:
        headers: JSON-serialisable header values; they travel with the announcement.
        payload: A :class:`Stream` for ``send_stream``, a bytes-like object for ``send_blob``.
    """

    def __init__(self, headers: dict[str, Any] | None = None, payload: Any = None) -> None:
        self.headers: dict[str, Any] = dict(headers or {})
        self.payload = payload

    def set_header(self, key: str, value: Any) -> None:
        """Set one header."""
        self.headers[key] = value

    def add_headers(self, headers: dict[str, Any]) -> None:
        """Merge ``headers`` into the message's headers."""
        self.headers.update(headers)

    def get_header(self, key: str, default: Any = None) -> Any:
        """Return header ``key`` or ``default`` when absent."""
        return self.headers.get(key, default)

    def remove_header(self, key: str) -> None:
        """Remove header ``key`` if present."""
        self.headers.pop(key, None)

    def set_prop(self, key: str, value: Any) -> None:
        """Set a local property: an attribute, as NVFlare's; it never leaves this process."""
        setattr(self, key, value)

    def get_prop(self, key: str, default: Any = None) -> Any:
        """Return local property ``key`` (see :meth:`set_prop`) or ``default``."""
        return getattr(self, key, default)

    def __repr__(self) -> str:
        return f"Message(headers={self.headers!r}, payload={type(self.payload).__name__})"


class Stream(ABC):
    """A raw, read-only, possibly seekable binary byte stream.

    Args:
        size: Total size of the stream in bytes, 0 if unknown.
        headers: Optional headers passed to the receiver.
    """

    def __init__(self, size: int = 0, headers: dict[str, Any] | None = None) -> None:
        self.size = size
        self.pos = 0
        self.headers = headers
        #: True once :meth:`close` ran (NVFlare's attribute).
        self.closed = False

    def get_size(self) -> int:
        """Return the total size, 0 if unknown."""
        return self.size

    def get_pos(self) -> int:
        """Return the current read position."""
        return self.pos

    def get_headers(self) -> dict[str, Any] | None:
        """Return the headers given at construction."""
        return self.headers

    @abstractmethod
    def read(self, size: int) -> ReadResult:
        """Read and return up to ``size`` bytes; an empty result means end of stream.

        Args:
            size: Upper bound of the returned length; fewer bytes may come back.

        Returns:
            Binary data. If empty, the stream is depleted (EOS).
        """

    def seek(self, offset: int) -> None:
        """Change the position to ``offset`` bytes from the start.

        Args:
            offset: Offset relative to the start of the stream.

        Raises:
            StreamError: If the stream is not seekable.
        """
        raise StreamError(f"{type(self).__name__} is not seekable (asked to seek to {offset}).")

    def close(self) -> None:
        """Close the stream (subclasses that hold resources extend this)."""
        self.closed = True


class StreamTaskSpec(ABC):
    """The handle a :class:`StreamFuture` uses to stop its transfer."""

    @abstractmethod
    def cancel(self) -> None:
        """Cancel the task."""

    def cancel_note(self) -> str:
        """What a cancel at this point may not have stopped (e.g. a delivery), or ``""``."""
        return ""


class StreamFuture:
    """Future of one transfer, fashioned after :class:`concurrent.futures.Future`.

    Progress counts bytes written to Redis on the sender and bytes delivered on the
    receiver. Every stored exception is a :class:`StreamError`: other exceptions are
    wrapped, with the original as ``__cause__``.

    Args:
        stream_id: Identifier of the transfer.
        headers: The message headers of the transfer.
        task_handle: Used by :meth:`cancel` to stop the transfer.
    """

    def __init__(
        self,
        stream_id: int,
        headers: dict[str, Any] | None = None,
        task_handle: StreamTaskSpec | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.headers = headers
        self.task_handle = task_handle
        self._cond = threading.Condition()
        self._done = False
        self._cancelled = False
        self._result: Any = None
        self._exception: StreamError | None = None
        self._size = 0
        self._progress = 0
        self._callbacks: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def get_stream_id(self) -> int:
        """Return the transfer's stream id."""
        return self.stream_id

    def get_headers(self) -> dict[str, Any] | None:
        """Return the message headers."""
        return self.headers

    def get_size(self) -> int:
        """Return the total size in bytes, 0 if unknown."""
        return self._size

    def set_size(self, size: int) -> None:
        """Record the total size in bytes."""
        self._size = size

    def get_progress(self) -> int:
        """Return the bytes transferred so far."""
        return self._progress

    def set_progress(self, progress: int) -> None:
        """Record the bytes transferred so far (never moves backwards)."""
        self._progress = max(self._progress, progress)

    def cancel(self) -> bool:
        """Cancel the transfer; the other side is told promptly.

        Returns:
            True if the transfer was cancelled, False if it had already finished.
        """
        note = self.task_handle.cancel_note() if self.task_handle is not None else ""
        cancelled = StreamCancelled(f"Stream {self.stream_id} was cancelled{note}.")
        # Settled in one step under the lock: a transfer finishing meanwhile makes this
        # return False, never a future both cancelled and successful.
        if not self._complete(None, cancelled, cancelling=True):
            return False
        if self.task_handle is not None:
            self.task_handle.cancel()
        return True

    def cancelled(self) -> bool:
        """Return True if the transfer was cancelled, here or by the other side (NVFlare's)."""
        return self._cancelled or isinstance(self._exception, StreamCancelled)

    def done(self) -> bool:
        """Return True if the transfer finished, failed or was cancelled."""
        return self._done

    def running(self) -> bool:
        """Return True while the transfer is under way."""
        return not self._done

    def result(self, timeout: float | None = None) -> Any:
        """Return the transfer's result, waiting up to ``timeout`` seconds.

        Args:
            timeout: Seconds to wait; None waits without limit.

        Returns:
            Bytes sent (sender), bytes read (stream receiver) or the blob (blob receiver).

        Raises:
            TimeoutError: If the transfer did not finish in time.
            StreamError: The transfer failed (``StreamCancelled`` when cancelled).
        """
        self._wait(timeout)
        if self._exception is not None:
            raise self._exception
        return self._result

    def exception(self, timeout: float | None = None) -> StreamError | None:
        """Return the exception of the transfer, or None if it succeeded.

        Args:
            timeout: Seconds to wait; None waits without limit.

        Returns:
            The stored :class:`StreamError`, or None.

        Raises:
            TimeoutError: If the transfer did not finish in time.
        """
        self._wait(timeout)
        return self._exception

    def add_done_callback(self, done_cb: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``done_cb(*args, **kwargs)`` when the future completes (at once if done).

        As in NVFlare the callback does not receive the future; pass it in ``args``.
        """
        with self._cond:
            if not self._done:
                self._callbacks.append((done_cb, args, kwargs))
                return
        _invoke(done_cb, args, kwargs)

    def set_result(self, value: Any) -> None:
        """Complete the future with ``value`` (ignored if already done)."""
        self._complete(value, None)

    def set_exception(self, exception: BaseException) -> None:
        """Fail the future (ignored if already done); non-``StreamError`` is wrapped."""
        if not isinstance(exception, StreamError):
            wrapped = StreamError(f"Stream {self.stream_id} failed: {_describe(exception)}")
            wrapped.__cause__ = exception
            exception = wrapped
        self._complete(None, exception)

    def _complete(
        self, value: Any, exception: StreamError | None, *, cancelling: bool = False
    ) -> bool:
        """Settle the future unless it is done; return whether this call settled it."""
        with self._cond:
            if self._done:
                return False
            self._result, self._exception, self._done = value, exception, True
            self._cancelled = cancelling
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for cb, args, kwargs in callbacks:
            _invoke(cb, args, kwargs)
        return True

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"Stream {self.stream_id} did not finish within {timeout} s."
                    )
                self._cond.wait(remaining)

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"StreamFuture(stream_id={self.stream_id}, {state}, progress={self._progress})"


def _describe(exc: BaseException) -> str:
    """``Type: message`` of a wrapped exception."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _invoke(cb: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # A failing user callback must not break the thread that completes the future.
    try:
        cb(*args, **kwargs)
    except Exception:
        logger.exception("A stream done-callback %r raised.", cb)

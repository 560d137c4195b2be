"""Ready-made :class:`~framework.cell.types.Stream` sources: bytes-like objects, files, iterators.

:class:`BytesStream` (alias :class:`BlobStream`, NVFlare's name) hands out views into the
caller's buffers without copying; :class:`FileStream` reads a file; :class:`IterStream`
turns an iterator of byte chunks into a stream. This module does no Redis I/O.
"""

from __future__ import annotations

import bisect
import io
import os
from collections.abc import Iterable, Iterator
from typing import IO, Any

from framework.buffers import byte_view
from framework.cell.types import Stream
from framework.exceptions import StreamError

__all__ = ["BlobStream", "BytesStream", "FileStream", "IterStream", "as_stream"]


class BytesStream(Stream):
    """A seekable stream over one bytes-like object or a list of them (read as one).

    ``read`` returns memoryviews into the given buffers: nothing is copied, so the
    buffers must not change while the stream is being sent.

    Args:
        data: A bytes-like object (bytes, bytearray, memoryview, numpy array...) or a
            sequence of them, concatenated.
        headers: Optional headers passed to the receiver.
    """

    def __init__(self, data: Any, headers: dict[str, Any] | None = None) -> None:
        parts = list(data) if isinstance(data, (list, tuple)) else [data]
        self._parts = [byte_view(p) for p in parts]
        self._starts: list[int] = []
        total = 0
        for part in self._parts:
            self._starts.append(total)
            total += len(part)
        super().__init__(size=total, headers=headers)

    def read(self, size: int) -> memoryview:
        """Return a view of up to ``size`` bytes (fewer at a part boundary or the end).

        Args:
            size: Upper bound of the returned length.

        Returns:
            A memoryview; empty at the end of the data.
        """
        if self.pos >= self.size or size <= 0:
            return memoryview(b"")
        index = bisect.bisect_right(self._starts, self.pos) - 1
        part = self._parts[index]
        start = self.pos - self._starts[index]
        view = part[start : start + size]
        self.pos += len(view)
        return view

    def seek(self, offset: int) -> None:
        """Move to ``offset``.

        Args:
            offset: Offset relative to the start, within ``0..size``.

        Raises:
            StreamError: If ``offset`` is outside the data.
        """
        if not 0 <= offset <= self.size:
            raise StreamError(f"Cannot seek to {offset}: the stream holds {self.size} bytes.")
        self.pos = offset


#: NVFlare's name for the stream ``send_blob`` wraps around its payload.
BlobStream = BytesStream


class FileStream(Stream):
    """A stream over a binary file, seekable when the file is.

    Args:
        file: A path (opened and closed by the stream) or an open binary file object
            (left open: its owner closes it).
        headers: Optional headers passed to the receiver.

    Raises:
        StreamError: If the path cannot be opened.
    """

    def __init__(
        self, file: str | os.PathLike[str] | IO[bytes], headers: dict[str, Any] | None = None
    ) -> None:
        if isinstance(file, (str, os.PathLike)):
            try:
                self._file: IO[bytes] = open(file, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise StreamError(f"Cannot open {os.fspath(file)!r} for streaming: {exc}.") from exc
            self._owned = True
        else:
            self._file, self._owned = file, False
        super().__init__(size=_file_size(self._file), headers=headers)
        self.pos = self._tell()

    def read(self, size: int) -> bytes:
        """Read up to ``size`` bytes from the file.

        Args:
            size: Upper bound of the returned length.

        Returns:
            The bytes read; empty at end of file.
        """
        data = self._file.read(size)
        self.pos += len(data)
        return data

    def seek(self, offset: int) -> None:
        """Move the file position to ``offset``.

        Args:
            offset: Offset relative to the start of the file.

        Raises:
            StreamError: If the file is not seekable.
        """
        try:
            self._file.seek(offset)
        except (OSError, io.UnsupportedOperation) as exc:
            raise StreamError(f"Cannot seek the file to {offset}: {exc}.") from exc
        self.pos = offset

    def close(self) -> None:
        """Close the file if this stream opened it."""
        super().close()
        if self._owned:
            self._file.close()

    def _tell(self) -> int:
        try:
            return self._file.tell()
        except (OSError, io.UnsupportedOperation):
            return 0


def _file_size(file: IO[bytes]) -> int:
    """Size of a regular file, 0 (unknown) for pipes and sockets."""
    try:
        return max(os.fstat(file.fileno()).st_size, 0)
    except (OSError, io.UnsupportedOperation, AttributeError):
        return 0


class IterStream(Stream):
    """A one-pass stream over an iterable of bytes-like chunks (not seekable).

    Args:
        chunks: Any iterable of bytes-like objects; empty chunks are skipped.
        size: The total size if known in advance, else 0.
        headers: Optional headers passed to the receiver.
    """

    def __init__(
        self, chunks: Iterable[Any], size: int = 0, headers: dict[str, Any] | None = None
    ) -> None:
        super().__init__(size=size, headers=headers)
        self._chunks: Iterator[Any] = iter(chunks)
        self._pending = memoryview(b"")

    def read(self, size: int) -> memoryview:
        """Return up to ``size`` bytes of the next chunk.

        Args:
            size: Upper bound of the returned length.

        Returns:
            A memoryview; empty once the iterable is exhausted.
        """
        while not self._pending:
            item = next(self._chunks, None)
            if item is None:
                return memoryview(b"")
            self._pending = byte_view(item)
        view, self._pending = self._pending[:size], self._pending[size:]
        self.pos += len(view)
        return view

    def close(self) -> None:
        """Close the underlying iterator if it is a generator."""
        super().close()
        closer = getattr(self._chunks, "close", None)
        if callable(closer):
            closer()


def as_stream(payload: Any) -> Stream:
    """Wrap a blob payload (bytes-like or a sequence of them) in a :class:`BytesStream`.

    Args:
        payload: A :class:`Stream` (returned as is), a bytes-like object or a sequence of
            them; None is an empty blob.

    Returns:
        A stream over the payload.

    Raises:
        StreamError: If the payload is neither a stream nor bytes-like.
    """
    if isinstance(payload, Stream):
        return payload
    if payload is None:  # a message without a payload: an empty blob, as in NVFlare
        return BytesStream(b"")
    try:
        return BytesStream(payload)
    except (TypeError, ValueError) as exc:
        raise StreamError(
            f"A blob payload must be bytes-like, not {type(payload).__name__}."
        ) from exc

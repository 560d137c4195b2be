"""Chunk codec and reassembly: seal chunks on the sender, verify and place them on receivers.

:func:`encode_chunk` builds a chunk's header (sequence, offset, lengths, CRC-32C) and its
bytes on the wire, encrypted when a cipher is given. :class:`ChunkDecoder` checks every
arriving chunk - order, offset, length, checksum, authentication - and drops duplicates;
:class:`BlobBuffer` is the blob destination; it grows as verified chunks arrive.
This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import ctypes
from typing import Any

from crc32c import crc32c

from framework.cell.crypto import ChunkCipher
from framework.cell.frames import ChunkHeader
from framework.cell.window import Position
from framework.exceptions import (
    BlobSizeError,
    ChecksumError,
    EncryptionError,
    SequenceError,
    TruncatedFrameError,
)

__all__ = ["BlobBuffer", "ChunkDecoder", "encode_chunk", "uninitialized"]


def encode_chunk(
    sid: int, seq: int, off: int, data: Any, last: bool, cipher: ChunkCipher | None = None
) -> tuple[bytes, Any]:
    """Build one chunk frame.

    Args:
        sid: Stream id (bound into the encryption's associated data).
        seq: Chunk sequence number, from 0.
        off: Offset of the chunk's first byte in the stream.
        data: The chunk's plain bytes (bytes-like; viewed, not copied, when not encrypted).
        last: True for the final chunk.
        cipher: Seals the chunk when given.

    Returns:
        The JSON header and the bytes to store.
    """
    nonce = None
    wire = data
    if cipher is not None:
        nonce, wire = cipher.seal(data, sid, seq, off, last)
    header = ChunkHeader(
        seq=seq,
        off=off,
        len=len(data),
        wlen=len(wire),
        crc=crc32c(wire),
        last=last,
        nonce=nonce,
    )
    return header.model_dump_json().encode(), wire


class ChunkDecoder:
    """Verifies chunk frames of one transfer in order and returns their plain bytes.

    Args:
        sid: Stream id, for authentication.
        start: Position already consumed (non-zero when a receiver resumes).
        size: Announced total size, 0 if unknown.
        cipher: Opens sealed chunks; required exactly when the transfer is secure.
        name: Names the transfer in messages (e.g. ``"stream 7 from 'a'"``).
    """

    def __init__(
        self,
        sid: int,
        start: Position,
        size: int = 0,
        cipher: ChunkCipher | None = None,
        name: str | None = None,
    ) -> None:
        self.sid = sid
        self.name = name or f"stream {sid}"
        self.next_seq = start.seq + 1
        self.offset = start.off
        self.size = size
        self.cipher = cipher
        self.finished = False

    @property
    def position(self) -> Position:
        """Last accepted chunk and the bytes accepted so far."""
        return Position(self.next_seq - 1, self.offset)

    def accept(self, header: ChunkHeader, data: bytes, crc: int | None = None) -> bytes | None:
        """Verify one chunk frame and return its plain bytes.

        Args:
            header: The chunk's header.
            data: The chunk's bytes as stored.
            crc: CRC-32C of ``data`` if the reader computed it as the bytes arrived.

        Returns:
            The plain bytes, or None for a duplicate of an accepted chunk.

        Raises:
            SequenceError: A chunk is missing, misplaced, or follows the last one.
            TruncatedFrameError: The chunk's length differs from its header.
            ChecksumError: The CRC-32C does not match.
            EncryptionError: Authentication failed or the encryption state is wrong.
        """
        if header.seq < self.next_seq:
            return None
        self._check_place(header)
        if len(data) != header.wlen:
            raise TruncatedFrameError(
                f"The {self._where(header)} holds {len(data)} bytes, its header says {header.wlen}."
            )
        if (crc32c(data) if crc is None else crc) != header.crc:
            raise ChecksumError(
                f"The {self._where(header)} (offset {header.off}) fails its crc32c check: "
                "the data is corrupted."
            )
        plain = self._open(header, data)
        if len(plain) != header.len:
            raise TruncatedFrameError(
                f"The {self._where(header)} decodes to {len(plain)} bytes, "
                f"its header says {header.len}."
            )
        self.next_seq += 1
        self.offset += header.len
        self._check_size(header)
        self.finished = header.last
        return plain

    def _where(self, header: ChunkHeader) -> str:
        # Only formatted for an error: accept() runs once per chunk.
        return f"chunk {header.seq} of {self.name}"

    def _check_place(self, header: ChunkHeader) -> None:
        if self.finished or header.seq > self.next_seq or header.off != self.offset:
            self._misplaced(header, self._where(header))

    def _misplaced(self, header: ChunkHeader, where: str) -> None:
        if self.finished:
            raise SequenceError(f"The {where} arrived after the last chunk.")
        if header.seq > self.next_seq:
            raise SequenceError(
                f"The {where} arrived but chunk {self.next_seq} is missing: Redis lost it "
                "(a restart without persistence, a flush, eviction) or another party deleted it."
            )
        if header.off != self.offset:
            raise SequenceError(
                f"The {where} starts at offset {header.off}, expected {self.offset}."
            )

    def _check_size(self, header: ChunkHeader) -> None:
        if not self.size:
            return
        if self.offset > self.size or (header.last and self.offset != self.size):
            raise SequenceError(
                f"The {self.name} was announced with {self.size} bytes "
                f"but its chunk {header.seq} ends at {self.offset}."
            )

    def _open(self, header: ChunkHeader, data: bytes) -> bytes:
        if self.cipher is None:
            if header.nonce is not None:
                raise EncryptionError(
                    f"The {self._where(header)} is encrypted but the transfer was announced "
                    "as plain."
                )
            return data
        return self.cipher.open(data, header.nonce, self.sid, header.seq, header.off, header.last)


class BlobBuffer:
    """The destination of a blob: chunks are copied straight into place, in order.

    Memory is committed as verified chunks arrive, never from the announced size alone
    (anyone who can write to Redis can announce 4 GiB): the buffer at most doubles per
    growth step and never grows past the announced size. Large buffers grow by
    ``realloc``, which moves pages instead of copying them, and no byte is zero-filled.

    Args:
        sid: Stream id, for messages.
        size: Announced blob size, 0 if unknown.
        max_size: Largest blob accepted.

    Raises:
        BlobSizeError: If ``size`` exceeds ``max_size``.
    """

    def __init__(self, sid: int, size: int, max_size: int) -> None:
        if size > max_size:
            raise BlobSizeError(
                f"Blob stream {sid} has {size} bytes, "
                f"more than the {max_size} this receiver accepts."
            )
        self.sid = sid
        self.size = size
        self.max_size = max_size
        self.length = 0
        self.data = bytearray()

    def write(self, off: int, chunk: Any) -> None:
        """Copy ``chunk`` to offset ``off`` (chunks come in order).

        A view from :meth:`slot` is already in place: it is only committed (and released).

        Raises:
            BlobSizeError: The blob grows beyond ``max_size``.
            SequenceError: The chunk does not continue the blob or passes its size.
        """
        end = off + len(chunk)
        if end > self.max_size:
            raise BlobSizeError(
                f"Blob stream {self.sid} exceeds the {self.max_size} bytes this receiver accepts."
            )
        if off != self.length or (self.size and end > self.size):
            raise SequenceError(
                f"Blob stream {self.sid} got bytes {off}..{end}, "
                f"expected them at {self.length} within {self.size or 'unknown'} bytes."
            )
        if isinstance(chunk, memoryview) and chunk.obj is self.data:
            chunk.release()  # read straight into place; views must go before a resize
        else:
            if end > len(self.data):
                self._grow(end)
            with memoryview(self.data) as view:
                view[off:end] = chunk
        self.length = end

    def reserve(self, more: int) -> None:
        """Make room for up to ``more`` further bytes before reading in place.

        The room follows the data: at most as much again as the blob holds, and at least
        :data:`_FIRST_RESERVE`. ``more`` comes from the announcement (its chunk size),
        which nobody has verified yet: a forged one must not commit gigabytes before a
        single byte arrived. Chunks that find no room are read aside and copied in.
        """
        more = min(more, max(self.length, _FIRST_RESERVE))
        end = min(self.length + more, self.size or self.max_size)
        if end > len(self.data):
            self._grow(end)

    def slot(self, off: int, size: int) -> memoryview | None:
        """A view of where the next ``size`` bytes go, if they continue the blob and fit."""
        if off < self.length or off + size > len(self.data):
            return None
        return memoryview(self.data)[off : off + size]

    def _grow(self, end: int) -> None:
        limit = self.size or self.max_size
        _resize(self.data, min(max(end, 2 * len(self.data), _FIRST_GROWTH), limit))

    def release(self) -> bytearray:
        """Hand the blob over, trimmed to the bytes received."""
        if len(self.data) != self.length:
            _resize(self.data, self.length)
        return self.data


#: Smallest growth step of a blob buffer.
_FIRST_GROWTH = 1 << 20
#: Room a blob buffer makes for reading in place before it holds any byte: one XREAD
#: batch of default chunks (8 x (1 MiB - 1 KiB)).
_FIRST_RESERVE = 8 << 20


def _resize(buffer: bytearray, size: int) -> None:
    """Resize ``buffer`` without zero-filling new bytes (CPython), else with.

    ``PyByteArray_Resize`` reallocates; for large sizes glibc's ``realloc`` remaps the
    pages (no copy), and new pages are only touched when chunks are copied in.
    """
    if _RESIZE is not None and _RESIZE(buffer, size) == 0:
        return
    if size < len(buffer):
        del buffer[size:]
    else:
        buffer.extend(bytes(size - len(buffer)))


def uninitialized(size: int) -> bytearray:
    """A bytearray of ``size`` bytes that the caller overwrites entirely (no zero-fill)."""
    buffer = bytearray()
    _resize(buffer, size)
    return buffer


def _c_resize() -> Any:
    try:
        resize = ctypes.pythonapi.PyByteArray_Resize
    except AttributeError:  # not CPython
        return None
    resize.restype = ctypes.c_int
    resize.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
    return resize


_RESIZE = _c_resize()

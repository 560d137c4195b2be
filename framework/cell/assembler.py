"""Chunk codec and reassembly: seal chunks on the sender, verify and place them on receivers.

:func:`encode_chunk` builds a chunk's header (sequence, offset, lengths, crc32) and its
bytes on the wire, encrypted when a cipher is given. :class:`ChunkDecoder` checks every
arriving chunk - order, offset, length, checksum, authentication - and drops duplicates;
:class:`BlobBuffer` is the blob destination, allocated once at the announced size.
This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import ctypes
import zlib
from typing import Any

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

__all__ = ["BlobBuffer", "ChunkDecoder", "encode_chunk"]


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
        nonce, wire = cipher.seal(data, sid, seq, off)
    header = ChunkHeader(
        seq=seq,
        off=off,
        len=len(data),
        wlen=len(wire),
        crc=zlib.crc32(wire),
        last=last,
        nonce=nonce,
    )
    return header.model_dump_json().encode(), wire


class ChunkDecoder:
    """Verifies chunk frames of one transfer in order and returns their plain bytes.

    Args:
        sid: Stream id, for messages and authentication.
        start: Position already consumed (non-zero when a receiver resumes).
        size: Announced total size, 0 if unknown.
        cipher: Opens sealed chunks; required exactly when the transfer is secure.
    """

    def __init__(
        self, sid: int, start: Position, size: int = 0, cipher: ChunkCipher | None = None
    ) -> None:
        self.sid = sid
        self.next_seq = start.seq + 1
        self.offset = start.off
        self.size = size
        self.cipher = cipher
        self.finished = False

    @property
    def position(self) -> Position:
        """Last accepted chunk and the bytes accepted so far."""
        return Position(self.next_seq - 1, self.offset)

    def accept(self, header: ChunkHeader, data: bytes) -> bytes | None:
        """Verify one chunk frame and return its plain bytes.

        Args:
            header: The chunk's header.
            data: The chunk's bytes as stored.

        Returns:
            The plain bytes, or None for a duplicate of an accepted chunk.

        Raises:
            SequenceError: A chunk is missing, misplaced, or follows the last one.
            TruncatedFrameError: The chunk's length differs from its header.
            ChecksumError: The crc32 does not match.
            EncryptionError: Authentication failed or the encryption state is wrong.
        """
        if header.seq < self.next_seq:
            return None
        where = f"chunk {header.seq} of stream {self.sid}"
        self._check_place(header, where)
        if len(data) != header.wlen:
            raise TruncatedFrameError(
                f"The {where} holds {len(data)} bytes, its header says {header.wlen}."
            )
        if zlib.crc32(data) != header.crc:
            raise ChecksumError(
                f"The {where} (offset {header.off}) fails its crc32 check: the data is corrupted."
            )
        plain = self._open(header, data, where)
        if len(plain) != header.len:
            raise TruncatedFrameError(
                f"The {where} decodes to {len(plain)} bytes, its header says {header.len}."
            )
        self.next_seq += 1
        self.offset += header.len
        self._check_size(header, where)
        self.finished = header.last
        return plain

    def _check_place(self, header: ChunkHeader, where: str) -> None:
        if self.finished:
            raise SequenceError(f"The {where} arrived after the last chunk.")
        if header.seq > self.next_seq:
            raise SequenceError(f"The {where} arrived but chunk {self.next_seq} is missing.")
        if header.off != self.offset:
            raise SequenceError(
                f"The {where} starts at offset {header.off}, expected {self.offset}."
            )

    def _check_size(self, header: ChunkHeader, where: str) -> None:
        if not self.size:
            return
        if self.offset > self.size or (header.last and self.offset != self.size):
            raise SequenceError(
                f"Stream {self.sid} was announced with {self.size} bytes "
                f"but the {where} ends at {self.offset}."
            )

    def _open(self, header: ChunkHeader, data: bytes, where: str) -> bytes:
        if self.cipher is None:
            if header.nonce is not None:
                raise EncryptionError(
                    f"The {where} is encrypted but the transfer was announced as plain."
                )
            return data
        return self.cipher.open(data, header.nonce, self.sid, header.seq, header.off)


class BlobBuffer:
    """The destination of a blob: allocated once, chunks copied straight into place.

    Args:
        sid: Stream id, for messages.
        size: Announced blob size.
        max_size: Largest blob accepted.

    Raises:
        BlobSizeError: If ``size`` exceeds ``max_size`` (raised before allocating).
    """

    def __init__(self, sid: int, size: int, max_size: int) -> None:
        if size > max_size:
            raise BlobSizeError(
                f"Blob stream {sid} has {size} bytes, "
                f"more than the {max_size} this receiver accepts."
            )
        self.sid = sid
        self.data = _allocate(size)
        self._view = memoryview(self.data)

    def write(self, off: int, chunk: Any) -> None:
        """Copy ``chunk`` to offset ``off``.

        Raises:
            SequenceError: If the chunk does not fit inside the blob.
        """
        end = off + len(chunk)
        if end > len(self.data):
            raise SequenceError(
                f"Blob stream {self.sid} got bytes up to {end}, beyond its size {len(self.data)}."
            )
        self._view[off:end] = chunk

    def release(self) -> bytearray:
        """Hand the blob over; the buffer's own view is released so it can be resized."""
        self._view.release()
        return self.data


#: Blobs at least this large skip bytearray's zero fill (see :func:`_allocate`).
_LAZY_ALLOCATION = 1 << 20


def _allocate(size: int) -> bytearray:
    """A bytearray of ``size`` bytes, without zero-filling large ones.

    ``bytearray(n)`` writes n zeros before the first chunk arrives: for 1 GB that is
    ~0.5 s of page faults up front. CPython's ``PyByteArray_FromStringAndSize(NULL, n)``
    leaves the memory as malloc returns it (fresh, lazily mapped pages for large sizes),
    so pages are touched only when chunks are copied in, overlapping the transfer.
    Every byte is overwritten: the decoder only finishes when chunks covered the size.
    """
    if size < _LAZY_ALLOCATION:
        return bytearray(size)
    try:
        make = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython
        return bytearray(size)
    make.restype = ctypes.py_object
    make.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
    blob: bytearray = make(None, size)
    return blob

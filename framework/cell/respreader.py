"""XREAD replies parsed straight from a socket: each chunk's bytes are copied once.

redis-py with hiredis copies every reply byte three times (kernel to a 64 KB read
buffer, into hiredis's own buffer, into a new ``bytes``). :class:`RespReader` parses a
reply itself: small values from a read buffer, each chunk body by ``recv_into``
straight into its destination, a new ``bytearray`` or, in blob mode, its place in the
blob. A chunk entry in the sender's layout, and each stream's head, are matched in the
buffer in one step; anything else is parsed line by line.

Each chunk body's CRC-32C is computed piece by piece right after ``recv_into`` wrote
the piece, while it is still in the CPU cache (:class:`Checked`): checked after a whole
``XREAD`` batch had arrived, the bytes came back from main memory, which cost the
receiver more than the socket copy itself. From a Redis on the same host, the reader
also asks the kernel (``SO_RCVLOWAT``) not to wake it before the rest of a chunk body
is there: Redis's writes arrive in 64 KB segments, and each wake-up is a context switch
(fan-out of 256 MB to 4 receivers: 0.335-0.352 s against 0.369-0.390 s, receivers' CPU
0.26-0.27 s against 0.30-0.31 s). Over a network, where a chunk may take longer than
the socket timeout to arrive, reads return whatever has arrived.

Errors are redis-py's own exceptions, so callers map them as usual.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crc32c import crc32c
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError

from framework._raw import recv_into
from framework.cell.assembler import uninitialized

__all__ = ["Checked", "Place", "RespReader"]

#: ``place(fields_so_far, size)``: where a chunk body of ``size`` bytes goes (a writable
#: memoryview of exactly that size), or None for a new bytearray. Asked only for an
#: entry's last field, so ``fields_so_far`` holds every other field of the entry.
Place = Callable[[list[Any], int], "memoryview | None"]

#: Bytes of the read buffer for everything but chunk bodies.
_BUFFER = 1 << 16
#: Bulk strings at least this long are read in place instead of through the buffer.
_IN_PLACE = 1 << 14
#: Most bytes a loopback reader waits for before it is woken (``SO_RCVLOWAT``).
_WAKE_BYTES = 1 << 20
#: The fields of a chunk entry: its header, and the chunk's bytes.
_HEADER, _DATA = b"h", b"d"
#: A stream of an XREAD reply in RESP2, up to its entries: ``[key, [<count>``.
_STREAM_HEAD = re.compile(rb"\*2\r\n\$(\d+)\r\n([^\r]*)\r\n\*(\d+)\r\n")
#: A chunk entry as the sender writes it, up to its body: ``[id, [h, header, d, <size>``.
#: Matched in the read buffer in one call instead of nine header lines; anything else
#: (another layout, a value holding CR, an entry cut by the buffer's end) is parsed
#: line by line.
_CHUNK_ENTRY = re.compile(
    rb"\*2\r\n\$(\d+)\r\n([^\r]*)\r\n\*4\r\n\$1\r\nh\r\n\$(\d+)\r\n([^\r]*)\r\n"
    rb"\$1\r\nd\r\n\$(\d+)\r\n"
)


@dataclass(frozen=True)
class Checked:
    """A chunk body as read, with the CRC-32C of its bytes computed as they arrived."""

    #: The bytes: a bytes object, a bytearray, or the memoryview ``place`` chose.
    data: Any
    crc: int


class RespReader:
    """A minimal RESP2/RESP3 reply parser over a blocking socket.

    With ``whole``, reads into a bulk string wait for the rest of it (up to
    :data:`_WAKE_BYTES`) instead of waking for every segment; the socket's low-water mark
    is back at 1 byte once the string is read (a failed read discards the connection).

    Args:
        sock: The connection's socket, with a timeout.
        whole: Wait for whole bodies (the peer is on this host).
    """

    def __init__(self, sock: socket.socket, whole: bool = False) -> None:
        self.sock = sock
        self.whole = whole
        self.buf = bytearray(_BUFFER)
        self.view = memoryview(self.buf)
        self.start = self.end = 0

    def pending(self) -> bool:
        """Whether bytes past the replies read so far are in the buffer (never expected)."""
        return self.start != self.end

    def value(self) -> Any:
        """One reply of any type (errors as redis-py exception objects, not raised)."""
        kind, rest = self._header()
        if kind in b"*~>":
            n = int(rest)
            return None if n < 0 else [self.value() for _ in range(n)]
        if kind == b"%"[0]:
            return {self.value(): self.value() for _ in range(int(rest))}
        if kind in b"$=":
            n = int(rest)
            return None if n < 0 else self._body(n, None)
        return self._simple(kind, rest)

    def xread(self, place: Place | None) -> Any:
        """An XREAD reply: ``[(key, [(id, fields)])]``, chunk bodies placed by ``place``."""
        kind, rest = self._header()
        if kind == b"_"[0]:
            return []  # RESP3 null: nothing arrived within BLOCK
        if kind not in b"*%":
            return self._simple(kind, rest)
        out = []
        resp2 = kind == b"*"[0]
        for _ in range(max(int(rest), 0)):  # RESP2 null is *-1
            head = _STREAM_HEAD.match(self.buf, self.start, self.end) if resp2 else None
            if head is not None and len(head[2]) == int(head[1]):
                self.start = head.end()
                out.append((head[2], self._entries(int(head[3]), place)))
                continue
            if resp2:
                self._header()  # each stream is a [key, entries] pair in RESP2
            key = self.value()
            out.append((key, self._entries(int(self._header()[1]), place)))
        return out

    def _entries(self, count: int, place: Place | None) -> list[tuple[bytes, list[Any]]]:
        entries = []
        for _ in range(count):
            chunk = self._chunk_entry(place)
            if chunk is not None:
                entries.append(chunk)
                continue
            self._header()  # [id, fields]
            eid = self.value()
            fields: list[Any] = []
            items = max(int(self._header()[1]), 0)
            for i in range(items):
                size = int(self._header()[1])
                if size < 0:
                    fields.append(None)
                    continue
                if not (i % 2 and fields[-1] == _DATA):
                    fields.append(self._body(size, None))
                    continue
                # A later field (a second header, say) could change what the body is
                # checked against after ``place`` chose its place by the fields before it.
                last = i == items - 1
                target = None if place is None or not last else place(fields, size)
                fields.append(self._checked_body(size, target))
            entries.append((eid, fields))
        return entries

    def _chunk_entry(self, place: Place | None) -> tuple[bytes, list[Any]] | None:
        """A chunk entry whose prefix is in the buffer in the sender's layout, else None."""
        match = _CHUNK_ENTRY.match(self.buf, self.start, self.end)
        if match is None:
            return None
        eid, header = match[2], match[4]
        # [^\r]* stops at a CR inside a value: the declared lengths must agree.
        if len(eid) != int(match[1]) or len(header) != int(match[3]):
            return None
        self.start = match.end()
        size = int(match[5])
        fields: list[Any] = [_HEADER, header, _DATA]
        target = None if place is None else place(fields, size)
        fields.append(self._checked_body(size, target))
        return eid, fields

    def _simple(self, kind: int, rest: bytes) -> Any:
        if kind == b"+"[0]:
            return rest
        if kind == b":"[0]:
            return int(rest)
        if kind == b"-"[0] or kind == b"!"[0]:
            # redis-py's own mapping: "OOM ..." becomes OutOfMemoryError, and so on.
            error: Exception = BaseParser.parse_error(  # type: ignore[no-untyped-call]
                rest.decode(errors="replace")
            )
            return error
        if kind == b"_"[0]:
            return None
        if kind == b","[0]:
            return float(rest)
        if kind == b"#"[0]:
            return rest == b"t"
        raise RedisConnectionError(f"Unexpected reply type {chr(kind)!r} from Redis.")

    def _header(self) -> tuple[int, bytes]:
        while True:
            at = self.buf.find(b"\r\n", self.start, self.end)
            if at >= 0:
                line = bytes(self.view[self.start : at])
                self.start = at + 2
                return line[0], line[1:]
            self._fill()

    def _body(self, size: int, target: memoryview | None) -> Any:
        if target is None and size < _IN_PLACE:
            while self.end - self.start < size + 2:
                self._fill()
            small = bytes(self.view[self.start : self.start + size])
            self.start += size + 2
            return small
        out, _ = self._in_place(size, target, checksum=False)
        return out

    def _checked_body(self, size: int, target: memoryview | None) -> Checked:
        if target is None and size < _IN_PLACE:
            small = self._body(size, None)
            return Checked(small, crc32c(small))
        out, crc = self._in_place(size, target, checksum=True)
        return Checked(out, crc)

    def _in_place(self, size: int, target: memoryview | None, checksum: bool) -> tuple[Any, int]:
        """Receive a bulk string into ``target`` or a new bytearray, and its CRC-32C (or 0)."""
        # Every byte is received into it before it is returned: no zero-fill needed.
        out: memoryview | bytearray = target if target is not None else uninitialized(size)
        dest = memoryview(out)
        have = min(self.end - self.start, size)
        dest[:have] = self.view[self.start : self.start + have]
        self.start += have
        crc = crc32c(dest[:have]) if checksum else 0
        wake = 1
        while have < size:
            if self.whole and wake != min(size - have, _WAKE_BYTES):
                wake = self._wake_at(min(size - have, _WAKE_BYTES))
            got = self._recv(dest[have:])
            if checksum:
                crc = crc32c(dest[have : have + got], crc)
            have += got
        if wake != 1:
            self._wake_at(1)
        while self.end - self.start < 2:
            self._fill()
        self.start += 2  # the bulk's CRLF
        return out, crc

    def _wake_at(self, nbytes: int) -> int:
        """Have the kernel wake this reader once ``nbytes`` are there (or the peer closed)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, nbytes)
        except OSError as exc:
            raise RedisConnectionError(f"Error while setting up a socket read: {exc}") from exc
        return nbytes

    def _fill(self) -> None:
        if self.start == self.end:
            self.start = self.end = 0
        elif self.end == len(self.buf):
            # Keep the unread tail; a header line never comes near the buffer's size.
            tail = self.end - self.start
            self.buf[:tail] = self.view[self.start : self.end]
            self.start, self.end = 0, tail
        self.end += self._recv(self.view[self.end :])

    def _recv(self, into: memoryview) -> int:
        return recv_into(self.sock, into)

"""What one transfer's streams yield: chunk frames and controls, decoded and authenticated.

:class:`~framework.cell.transport.TransferIO` is shared by a transfer's sender and its
receivers; this mixin is the part that reads and decodes entries. Whoever can write to
Redis can append to these streams, so nothing read here is trusted: a chunk entry
without its fields or with a bad header fails the transfer (the receiver cannot
assemble it), while a control entry that is unreadable or, on a secure transfer, not
authenticated is logged and skipped, never acted on: it must not end the transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex
from pydantic import ValidationError

from framework.cell.auth import ControlAuth
from framework.cell.frames import (
    CONTROL_FIELD,
    DATA_FIELD,
    HEADER_FIELD,
    MAC_FIELD,
    ChunkHeader,
    Control,
    decode,
)
from framework.cell.rawread import ReadSession, exchange
from framework.cell.respreader import Checked, Place
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import FramingError, MalformedFrameError
from framework.redis_streams import stream_entries, text

__all__ = ["POLL_MS", "BadControlError", "ControlEntry", "Frame", "TransferReading", "raise_first"]

# The transport's logger: its records keep the name users configure and filter on.
logger = logging.getLogger("framework.cell.transport")

#: BLOCK (ms) of every wait: short enough that close() joins quickly; data and controls
#: wake a waiting reader at once, so this only bounds idle polling.
POLL_MS = min(250, MAX_BLOCK_MS)

#: An ack-stream entry: its id and the control, or None when it was ignored (the id
#: still moves the reader's cursor past it).
ControlEntry = tuple[bytes, "Control | None"]


@dataclass(frozen=True)
class Frame:
    """A chunk frame as read from the data stream."""

    header: ChunkHeader
    #: The body: bytes, a bytearray, or a view of its place in a blob (bytes-like).
    data: Any
    #: CRC-32C of ``data`` computed while it was read, None when it still has to be.
    crc: int | None = None


#: Unauthenticated controls kept for the owner of a :class:`TransferReading` to look at.
_UNVERIFIED_KEPT = 16


class BadControlError(MalformedFrameError):
    """A control entry of a secure transfer carries no valid MAC (forged or foreign).

    Attributes:
        control: What the entry says, unverified (never acted on as genuine).
    """

    def __init__(self, message: str, control: Control) -> None:
        super().__init__(message)
        self.control = control


class TransferReading:
    """Reading and decoding a transfer's entries, for a :class:`TransferIO`."""

    conn: RedisConnection
    sid: int
    auth: ControlAuth | None
    ignored: str | None
    unverified: list[Control]
    data: str
    ack: str
    _read_what: str

    if TYPE_CHECKING:  # provided by TransferIO

        def _control_commands(self, control: Control) -> list[tuple[Any, ...]]: ...

    def read(
        self,
        data_from: str,
        ack_from: str,
        count: int,
        ack: Control | None = None,
        block_ms: int = POLL_MS,
        place: Place | None = None,
        session: ReadSession | None = None,
    ) -> tuple[list[tuple[bytes, Frame]], list[ControlEntry]]:
        """Block up to ``block_ms`` for chunk frames and controls, in one XREAD.

        On a plain ``redis.Redis`` the reply is parsed by :mod:`framework.cell.respreader`
        (each chunk body copied once, into the place ``place`` picks); other clients go
        through redis-py.

        Args:
            data_from: Data-stream id after which to read.
            ack_from: Ack-stream id after which to read.
            count: Most entries per stream.
            ack: An acknowledgement to post in the same round trip, before reading.
            block_ms: Longest wait.
            place: Picks the destination of each chunk body (blob mode).
            session: The receiver's kept connection for these reads.

        Returns:
            ``(frames, controls)``, each as ``(entry_id, item)`` lists.
        """
        block = min(block_ms, MAX_BLOCK_MS)
        prefix = [] if ack is None else self._control_commands(ack)
        xread = ("XREAD", "COUNT", count, "BLOCK", block, "STREAMS", self.data, self.ack)
        try:
            replies, reply = exchange(
                self.conn.blocking, prefix, (*xread, data_from, ack_from), place, session
            )
            raise_first(replies)
        except (rex.RedisError, rex.RedisClusterException) as exc:  # once per read: no `with`
            self.conn.raise_mapped(exc, self._read_what, command="XREAD")
        frames: list[tuple[bytes, Frame]] = []
        controls: list[ControlEntry] = []
        for key, entries in stream_entries(reply):
            if text(key) == self.data:
                frames += [(eid, self._frame(eid, fields)) for eid, fields in entries]
            else:
                controls += self._parse_controls(entries)
        return frames, controls

    def _frame(self, eid: bytes, fields: dict[bytes, bytes]) -> Frame:
        raw, data = (fields or {}).get(HEADER_FIELD), (fields or {}).get(DATA_FIELD)
        if raw is None or data is None:
            missing = "header field 'h'" if raw is None else "data field 'd'"
            raise MalformedFrameError(f"The {self._entry(eid)} has no {missing}.")
        try:
            header = ChunkHeader.model_validate_json(raw)
        except ValidationError:  # decode() tells what is wrong (once per chunk: not before)
            header = decode(ChunkHeader, raw, f"header of the {self._entry(eid)}")
        if isinstance(data, Checked):
            return Frame(header, data.data, data.crc)
        return Frame(header, data)

    def _entry(self, eid: bytes) -> str:
        return f"chunk entry {text(eid)} of stream {self.sid}"

    def _controls(self, reply: Any) -> list[ControlEntry]:
        out: list[ControlEntry] = []
        for _, entries in stream_entries(reply):
            out += self._parse_controls(entries)
        return out

    def _parse_controls(
        self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[ControlEntry]:
        out: list[ControlEntry] = []
        for eid, fields in entries:
            try:
                out.append((eid, self.control(eid, fields)))
            except FramingError as exc:
                # Whoever can write to Redis can append here: a forged, foreign or newer
                # entry is never acted on, and must not end the transfer either.
                logger.warning("Ignoring a control entry: %s", exc)
                self.ignored = str(exc)
                if isinstance(exc, BadControlError):
                    self.unverified.append(exc.control)
                    # A receiver never takes them: keep a few, however many are forged.
                    del self.unverified[:-_UNVERIFIED_KEPT]
                out.append((eid, None))
        return out

    def take_unverified(self) -> list[Control]:
        """The controls read but not authenticated since the last call (none acted on)."""
        taken, self.unverified = self.unverified, []
        return taken

    def control(self, eid: bytes, fields: dict[bytes, bytes]) -> Control:
        """Decode and authenticate one control entry.

        Raises:
            MalformedFrameError: The entry has no control field or is not a control.
            UnsupportedVersionError: The control has another wire version.
            BadControlError: The transfer is secure and the entry's MAC is missing or wrong.
        """
        where = f"control entry {text(eid)} of stream {self.sid}"
        raw = (fields or {}).get(CONTROL_FIELD)
        if raw is None:
            raise MalformedFrameError(f"The {where} has no control field 'c'.")
        control = decode(Control, raw, where)
        if self.auth is not None and not self.auth.verify(raw, fields.get(MAC_FIELD)):
            claim = f"{control.kind} from {control.role} {control.sender!r}"
            raise BadControlError(
                f"The {where} ({claim}{': ' + control.msg if control.msg else ''}) "
                "is not authenticated with the transfer's key.",
                control,
            )
        return control


def raise_first(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply

"""Redis I/O of one transfer: its data stream, ack stream and meta hash.

All three keys share the transfer's hash tag, so every pipeline and every two-stream
``XREAD`` here stays in one cluster slot. Chunk frames use explicit ids (``<seq + 1>-0``)
and go through the retrying ``client``: a retried ``XADD`` meets "ID equal or smaller"
and is treated as already written. Control entries get automatic ids; duplicated acks
are harmless because positions only move forward. Blocking reads use the ``blocking``
client with ``BLOCK <= MAX_BLOCK_MS``. Redis errors are mapped at this boundary.

TTLs are refreshed by a small script that does nothing once the meta hash holds an
``end`` field: a transfer that failed or was cancelled keeps its short TTL, however late
another party's refresh arrives. Controls of a secure transfer carry a MAC (field ``m``,
see :mod:`framework.cell.auth`); unauthenticated ones are logged and skipped. Reading
and decoding entries is :mod:`framework.cell._transfer_reading`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from framework._connection_errors import redis_said
from framework.buffers import byte_view
from framework.cell._transfer_reading import (
    POLL_MS,
    BadControlError,
    ControlEntry,
    Frame,
    TransferReading,
    raise_first,
)
from framework.cell.auth import BadAnnouncementError, BadPositionError, ControlAuth
from framework.cell.frames import (
    CONTROL_FIELD,
    DATA_FIELD,
    HEADER_FIELD,
    MAC_FIELD,
    Announce,
    ChunkHeader,
    Control,
    decode,
    entry_id,
    seq_of,
)
from framework.cell.rawread import exchange
from framework.cell.window import Position
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import BackendError, MalformedFrameError, SequenceError
from framework.redis_streams import fields_of

__all__ = [
    "FAILED_TTL",
    "POLL_MS",
    "BadAnnouncementError",
    "BadControlError",
    "BadPositionError",
    "ControlEntry",
    "Frame",
    "TransferIO",
]

logger = logging.getLogger(__name__)

#: Seconds the keys of a failed or cancelled transfer stay, so the other side reads why.
FAILED_TTL = 60
#: Meta-hash field holding the announcement.
_ANNOUNCE = b"announce"
#: Meta-hash field holding the announcement's MAC (from a sender with a key).
_ANNOUNCE_MAC = b"announce_mac"
#: Control entries read per call; acks are small.
_CONTROL_COUNT = 1000
#: Redis's answer when an explicit id is not above the stream's last one.
_ALREADY_WRITTEN = "equal or smaller"
#: Meta-hash field marking a transfer that failed or was cancelled (value: the kind).
_END = b"end"
#: Refreshes the TTL of KEYS (data, ack, meta) to ARGV[1] seconds, unless the transfer ended.
_REFRESH = """
if redis.call('HEXISTS', KEYS[3], 'end') == 1 then return 0 end
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[1]) end
return 1
"""


class TransferIO(TransferReading):
    """The Redis side of one transfer, shared by its sender and receivers.

    Args:
        conn: The connection.
        sid: Stream id.
        ttl: Seconds the keys live without a refresh.
        auth: Signs and verifies controls (secure transfers); None leaves them plain.
    """

    def __init__(
        self, conn: RedisConnection, sid: int, ttl: float, auth: ControlAuth | None = None
    ) -> None:
        self.conn = conn
        self.sid = sid
        self.ttl = max(1, int(ttl))
        self.auth = auth
        #: The last control entry ignored as unreadable or unauthenticated, described.
        self.ignored: str | None = None
        #: Controls read but not authenticated, until the owner takes them (see
        #: :meth:`take_unverified`).
        self.unverified: list[Control] = []
        keys = conn.keys
        self.data, self.ack, self.meta = (
            keys.xfer_data(str(sid)),
            keys.xfer_ack(str(sid)),
            keys.xfer_meta(str(sid)),
        )
        self._read_what = f"read chunks of {self.data!r}"

    # -- sender side -------------------------------------------------------------------

    def create(self, announce: Announce, mac: bytes | None = None) -> None:
        """Store the announcement, and its MAC if signed, in the meta hash.

        Receivers check it against the inbox's copy; a resumed sender reads it.
        """
        mapping: dict[bytes, Any] = {_ANNOUNCE: announce.model_dump_json()}
        if mac is not None:
            mapping[_ANNOUNCE_MAC] = mac
        with self.conn.mapped_errors(f"create transfer {self.meta!r}", command="HSET"):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.hset(self.meta, mapping=mapping)
            pipe.expire(self.meta, self.ttl)
            pipe.execute()

    def write(
        self, frames: Sequence[tuple[int, bytes, Any]], trim_below: int | None, ack_from: str
    ) -> list[ControlEntry]:
        """Write chunk frames, trim consumed ones and collect new controls, in one round trip.

        Args:
            frames: ``(seq, header_json, wire_bytes)`` for each chunk, in order.
            trim_below: Delete frames of chunks numbered below this, when given.
            ack_from: Ack-stream id after which to read controls.

        Returns:
            New control entries as ``(entry_id, control)``.

        Raises:
            BackendError: If Redis fails or refuses a frame for another reason.
        """
        conn = self.conn
        commands: list[tuple[Any, ...]] = [
            ("XADD", self.data, entry_id(seq), HEADER_FIELD, header, DATA_FIELD, conn.bulk(wire))
            for seq, header, wire in frames
        ]
        if trim_below is not None:
            commands.append(("XTRIM", self.data, "MINID", entry_id(trim_below)))
        commands.append(self._refresh_command())
        xread = ("XREAD", "COUNT", _CONTROL_COUNT, "STREAMS", self.ack, ack_from)
        with conn.mapped_errors(f"write chunks to {self.data!r}", command="XADD"):
            replies, controls = exchange(conn.client, commands, xread)
        refused = []
        for frame, reply in zip(frames, replies, strict=False):
            if not isinstance(reply, Exception):
                continue
            if _ALREADY_WRITTEN not in str(reply):
                said = redis_said(reply)
                raise BackendError(
                    f"Could not write a chunk to {self.data!r}: Redis reported {said}.",
                    command="XADD",
                )
            refused.append(frame)
        if refused:
            self._check_written(refused)
        for error in replies[len(frames) :]:
            if isinstance(error, Exception):
                said = redis_said(error)
                raise BackendError(
                    f"Could not update transfer {self.meta!r}: Redis reported {said}."
                )
        return self._controls(controls)

    def _check_written(self, frames: Sequence[tuple[int, bytes, Any]]) -> None:
        """After "ID equal or smaller": each chunk must be there, as this sender wrote it.

        A write retried after a lost reply meets its own entry, byte for byte. Anything
        else at a chunk's id, or past it, was written by another party (forged, or a
        second sender of the same stream id): receivers would read it as the chunk.

        Raises:
            MalformedFrameError: A refused chunk is not in the data stream, or another
                entry stands at its id.
        """
        what = f"check chunks in {self.data!r}"
        with self.conn.mapped_errors(what, command="XRANGE"):
            pipe = self.conn.client.pipeline(transaction=False)
            for seq, _, _ in frames:
                pipe.xrange(self.data, entry_id(seq), entry_id(seq), count=1)
            pipe.xrevrange(self.data, count=1)
            *found, last = pipe.execute()
        for (seq, header, wire), entries in zip(frames, found, strict=True):
            if not entries:
                after = _text(last[0][0]) if last else "?"
                raise MalformedFrameError(
                    f"Could not write chunk {seq} of stream {self.sid}: the data stream "
                    f"{self.data!r} holds entry {after} after it, which this sender did not write."
                )
            if not _same_frame(entries[0][1], header, wire):
                raise MalformedFrameError(
                    f"Chunk {seq} of stream {self.sid} was not written: the data stream "
                    f"{self.data!r} already holds another entry at its id, which this sender "
                    "did not write (forged, or written by another party). Receivers may have "
                    "read it instead of the chunk."
                )

    def wait_controls(self, ack_from: str, block_ms: int = POLL_MS) -> list[ControlEntry]:
        """Block up to ``block_ms`` for control entries after ``ack_from``."""
        with self.conn.mapped_errors(f"read controls of {self.ack!r}", command="XREAD"):
            reply = self.conn.blocking.xread(
                {self.ack: ack_from}, count=_CONTROL_COUNT, block=min(block_ms, MAX_BLOCK_MS)
            )
        return self._controls(reply)

    def last_frame(self) -> ChunkHeader | None:
        """Header of the newest chunk frame still in Redis (to resume a sender)."""
        with self.conn.mapped_errors(f"read the last chunk of {self.data!r}", command="XREVRANGE"):
            entries = self.conn.client.xrevrange(self.data, count=1)
        if not entries:
            return None
        return decode(
            ChunkHeader, entries[0][1][HEADER_FIELD], f"last chunk header of stream {self.sid}"
        )

    def delete(self) -> None:
        """Remove the transfer's keys (all receivers are done)."""
        with self.conn.mapped_errors(f"delete transfer {self.meta!r}", command="UNLINK"):
            self.conn.client.unlink(self.data, self.ack, self.meta)

    def expire(self, seconds: float, reason: str | None = "error", drop_data: bool = False) -> None:
        """Mark the transfer ended and shorten the keys' lives (late readers still see why).

        Later refreshes, by any party, leave the shorter TTL alone.

        Args:
            seconds: The keys' remaining life.
            reason: The end mark; None leaves it to whoever ended the transfer (a
                ``cancel`` or ``close`` posted meanwhile must not read as an error).
            drop_data: Delete the chunk frames now: nobody can use them any more, and
                kept for ``seconds`` they could keep a full Redis refusing the next
                transfer.
        """
        with self.conn.mapped_errors(f"expire transfer {self.meta!r}", command="EXPIRE"):
            pipe = self.conn.client.pipeline(transaction=False)
            if reason is not None:
                pipe.hset(self.meta, _END, reason)
            if drop_data:
                pipe.delete(self.data)  # DEL: a lazily freed stream still counts as used
            self._expire_all(pipe, seconds)
            # The end mark is refused when Redis is out of memory; the EXPIREs still count.
            raise_first(pipe.execute(raise_on_error=False)[1 if reason is not None else 0 :])

    def _expire_all(self, pipe: Any, seconds: float) -> None:
        for key in (self.data, self.ack, self.meta):
            pipe.expire(key, max(1, int(seconds)))

    # -- both sides --------------------------------------------------------------------

    def post(self, control: Control) -> None:
        """Append a control entry and set the TTLs.

        An ack or heartbeat refreshes the keys' full TTL; a cancel, close or error ends
        the transfer, so its keys then live only :data:`FAILED_TTL` seconds (long enough
        for the other side to read why). If Redis is out of memory, an ending notice
        first frees the transfer's chunk frames (nobody can use them now), so that the
        other side learns the real cause instead of waiting out its idle timeout.
        """
        what = f"post {control.kind} to {self.ack!r}"
        try:
            self._post(control, what)
        except BackendError as exc:
            if control.kind in _PROGRESS or "maxmemory" not in str(exc):
                raise
            logger.warning("Redis is out of memory; dropping the frames of stream %s.", self.sid)
            # DEL, not UNLINK: a lazily freed stream still counts against maxmemory
            # when the notice is retried right after.
            with self.conn.mapped_errors(f"free {self.data!r}", command="DEL"):
                self.conn.client.delete(self.data)
            self._post(control, what)

    def post_unsigned_notice(self, control: Control) -> None:
        """Append ``control`` unsigned, and touch nothing else of the transfer.

        For a notice about an announcement this cell could not authenticate: the
        transfer may be genuine, so the notice neither marks it ended nor shortens the
        lives of its keys (its TTL is set only on a stream that has none).

        Raises:
            BackendError: If Redis fails.
        """
        raw = control.model_dump_json().encode()
        with self.conn.mapped_errors(f"post {control.kind} to {self.ack!r}", command="XADD"):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.xadd(self.ack, {CONTROL_FIELD: raw})
            pipe.expire(self.ack, self.ttl, nx=True)
            pipe.execute()

    def _post(self, control: Control, what: str) -> None:
        with self.conn.mapped_errors(what, command="XADD"):
            pipe = self.conn.client.pipeline(transaction=False)
            for command in self._control_commands(control):
                pipe.execute_command(*command)
            pipe.execute()

    def _control_commands(self, control: Control) -> list[tuple[Any, ...]]:
        """The commands that post ``control``: its entry, the ack position, the TTLs."""
        commands: list[tuple[Any, ...]] = []
        if control.kind == "ack":
            # Before the XADD: once the sender sees the final ack it deletes the keys,
            # and a later HSET would recreate the meta hash.
            field = _ack_field(control.sender)
            position = f"{control.seq} {control.off}"
            if self.auth is not None:
                # Bound to the field: a copy under another receiver's name fails.
                position = self.auth.sign_text(position, field)
            commands.append(("HSET", self.meta, field, position))
        raw = control.model_dump_json().encode()
        entry: tuple[Any, ...] = ("XADD", self.ack, "*", CONTROL_FIELD, raw)
        if self.auth is not None:
            entry += (MAC_FIELD, self.auth.sign(raw))
        commands.append(entry)
        if control.kind in _PROGRESS:
            commands.append(self._refresh_command())
        else:
            commands.append(("HSET", self.meta, _END, control.kind))
            ttl = max(1, int(min(FAILED_TTL, self.ttl)))
            commands += [("EXPIRE", key, ttl) for key in (self.data, self.ack, self.meta)]
        return commands

    def load(self, key: bytes | None = None) -> Announce | None:
        """The stored announcement, or None when the transfer is gone.

        Args:
            key: The cell key of a sender that resumes: the announcement must carry a
                valid MAC (a cell with a key signs every announcement it sends).

        Raises:
            MalformedFrameError: If the stored announcement cannot be read.
            BadAnnouncementError: If ``key`` is given and the MAC is missing or wrong.
        """
        what = f"announcement of stream {self.sid}"
        # Two HGETs in one round trip: the README's fw-cell ACL rules grant HGET, not HMGET.
        with self.conn.mapped_errors(f"read transfer {self.meta!r}", command="HGET"):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.hget(self.meta, _ANNOUNCE)
            pipe.hget(self.meta, _ANNOUNCE_MAC)
            raw, mac = pipe.execute()
        if raw is None:
            return None
        announce = decode(Announce, raw, what)
        if key is not None and not ControlAuth(key, self.sid).verify_announce(bytes(raw), mac):
            raise BadAnnouncementError(
                f"The stored {what} is not authenticated with the cell key "
                f"({'no MAC' if mac is None else 'wrong MAC'}): forged or altered."
            )
        return announce

    def ended(self) -> str | None:
        """Why the transfer ended (``cancel``, ``error``, ...), or None while it has not.

        An ended transfer's keys live on for a while, so late readers still see why.
        """
        with self.conn.mapped_errors(f"read transfer {self.meta!r}", command="HGET"):
            raw = self.conn.client.hget(self.meta, _END)
        return None if raw is None else bytes(raw).decode(errors="replace")

    def acked(self, target: str) -> Position:
        """The position ``target`` last acknowledged (nothing if it never did).

        Raises:
            BadPositionError: The transfer is secure and the stored value is not
                authenticated for ``target`` and this stream (forged, or copied from
                another receiver or transfer).
            MalformedFrameError: The stored value is not a position.
        """
        field = _ack_field(target)
        with self.conn.mapped_errors(f"read transfer {self.meta!r}", command="HGET"):
            raw = self.conn.client.hget(self.meta, field)
        if raw is None:
            return Position()
        # Anyone can store bytes here: undecodable ones fail the checks below, not decode().
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if self.auth is not None:
            opened = self.auth.open_text(text, field)
            if opened is None:
                raise BadPositionError(
                    f"The acknowledged position of {target!r} in stream {self.sid} is not "
                    "authenticated for that receiver and stream (forged, or copied from "
                    "another receiver or transfer)."
                )
            text = opened
        try:
            seq, off = text.split()
            return Position(int(seq), int(off))
        except ValueError as exc:
            raise MalformedFrameError(
                f"The acknowledged position of {target!r} in stream {self.sid} is malformed."
            ) from exc

    def check_resumable(self, start: Position, why: str = "") -> None:
        """Check that the chunk after ``start`` is still to be read from Redis.

        A receiver that resumes reads on after ``start``; if that chunk was trimmed
        (its position is older than Redis's frames) or the stream ended before it, it
        would wait for ever while both sides post heartbeats.

        Args:
            start: The position to resume after.
            why: Said in the message after the position (e.g. why it starts there).

        Raises:
            SequenceError: Redis holds a later chunk but not the next one, or the
                stream's last chunk comes before it.
            MalformedFrameError: The last chunk entry's header cannot be read.
        """
        wanted = start.seq + 1
        with self.conn.mapped_errors(f"check the chunks of {self.data!r}", command="XRANGE"):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.xrange(self.data, entry_id(wanted), "+", count=1)
            pipe.xrevrange(self.data, count=1)
            after, last = pipe.execute()
        where = f"Stream {self.sid} cannot resume at byte {start.off}{why}"
        if after:
            found = seq_of(after[0][0])
            if found > wanted:
                raise SequenceError(
                    f"{where}: Redis no longer holds its chunk {wanted} (the first chunk there "
                    f"is {found}); the position is older than what the sender has trimmed."
                )
            return
        if last:
            header = decode(
                ChunkHeader,
                fields_of(last[0][1]).get(HEADER_FIELD, b""),
                f"header of the last chunk entry of stream {self.sid}",
            )
            if header.last:
                raise SequenceError(
                    f"{where}: the stream's last chunk is {header.seq}, so chunk {wanted} "
                    "never comes."
                )

    def _refresh_command(self) -> tuple[Any, ...]:
        return ("EVAL", _REFRESH, 3, self.data, self.ack, self.meta, self.ttl)


#: Control kinds that keep a transfer alive (the others end it).
_PROGRESS = ("ack", "beat")


def _same_frame(fields: Any, header: bytes, wire: Any) -> bool:
    """Whether a stored entry's fields are exactly ``header`` and ``wire``."""
    stored = fields_of(fields)
    data = stored.get(DATA_FIELD)
    return bool(stored.get(HEADER_FIELD) == header and data is not None and byte_view(wire) == data)


def _ack_field(target: str) -> str:
    return f"ack:{target}"


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key

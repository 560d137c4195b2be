"""Redis I/O of one transfer: its data stream, ack stream and meta hash.

All three keys share the transfer's hash tag, so every pipeline and every two-stream
``XREAD`` here stays in one cluster slot. Chunk frames use explicit ids (``<seq + 1>-0``)
and go through the retrying ``client``: a retried ``XADD`` meets "ID equal or smaller"
and is treated as already written. Control entries get automatic ids; duplicated acks
are harmless because positions only move forward. Blocking reads use the ``blocking``
client with ``BLOCK <= MAX_BLOCK_MS``. Redis errors are mapped at this boundary.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from framework.cell.frames import (
    CONTROL_FIELD,
    DATA_FIELD,
    HEADER_FIELD,
    Announce,
    ChunkHeader,
    Control,
    decode,
    entry_id,
)
from framework.cell.window import Position
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import BackendError, StreamError

__all__ = ["FAILED_TTL", "POLL_MS", "Frame", "TransferIO", "stream_entries"]

logger = logging.getLogger(__name__)

#: BLOCK (ms) of every wait: short enough that close() joins quickly; data and controls
#: wake a waiting reader at once, so this only bounds idle polling.
POLL_MS = min(250, MAX_BLOCK_MS)
#: Seconds the keys of a failed or cancelled transfer stay, so the other side reads why.
FAILED_TTL = 60
#: Meta-hash field holding the announcement.
_ANNOUNCE = b"announce"
#: Control entries read per call; acks are small.
_CONTROL_COUNT = 1000
#: Redis's answer when an explicit id is not above the stream's last one.
_ALREADY_WRITTEN = "equal or smaller"


@dataclass(frozen=True)
class Frame:
    """A chunk frame as read from the data stream."""

    header: ChunkHeader
    data: bytes


def stream_entries(reply: Any) -> Iterable[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]:
    """Normalise an XREAD/XREADGROUP reply (RESP2 list or RESP3 map) to (key, entries)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return list(reply.items())
    return [(key, entries) for key, entries in reply]


class TransferIO:
    """The Redis side of one transfer, shared by its sender and receivers.

    Args:
        conn: The connection.
        sid: Stream id.
        ttl: Seconds the keys live without a refresh.
    """

    def __init__(self, conn: RedisConnection, sid: int, ttl: float) -> None:
        self.conn = conn
        self.sid = sid
        self.ttl = max(1, int(ttl))
        keys = conn.keys
        self.data, self.ack, self.meta = (
            keys.xfer_data(str(sid)),
            keys.xfer_ack(str(sid)),
            keys.xfer_meta(str(sid)),
        )

    # -- sender side -------------------------------------------------------------------

    def create(self, announce: Announce) -> None:
        """Store the announcement in the meta hash (used to resume either side)."""
        with self.conn.mapped_errors(f"create transfer {self.meta!r}", command="HSET"):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.hset(self.meta, _ANNOUNCE, announce.model_dump_json())
            pipe.expire(self.meta, self.ttl)
            pipe.execute()

    def write(
        self, frames: Sequence[tuple[int, bytes, Any]], trim_below: int | None, ack_from: str
    ) -> list[tuple[bytes, Control]]:
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
        with conn.mapped_errors(f"write chunks to {self.data!r}", command="XADD"):
            pipe = conn.client.pipeline(transaction=False)
            for seq, header, wire in frames:
                pipe.xadd(
                    self.data, {HEADER_FIELD: header, DATA_FIELD: conn.bulk(wire)}, id=entry_id(seq)
                )
            if trim_below is not None:
                pipe.xtrim(self.data, minid=entry_id(trim_below), approximate=False)
            self._refresh(pipe)
            pipe.xread({self.ack: ack_from}, count=_CONTROL_COUNT)
            replies = pipe.execute(raise_on_error=False)
        for reply in replies[: len(frames)]:
            if isinstance(reply, Exception) and _ALREADY_WRITTEN not in str(reply):
                raise BackendError(
                    f"Could not write a chunk to {self.data!r}: {reply}.", command="XADD"
                )
        for reply in replies[len(frames) :]:
            if isinstance(reply, Exception):
                raise BackendError(f"Could not update transfer {self.meta!r}: {reply}.")
        return self._controls(replies[-1])

    def wait_controls(self, ack_from: str, block_ms: int = POLL_MS) -> list[tuple[bytes, Control]]:
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

    def expire(self, seconds: float) -> None:
        """Shorten the keys' lives (after a failure, so late readers still see why)."""
        with self.conn.mapped_errors(f"expire transfer {self.meta!r}", command="EXPIRE"):
            pipe = self.conn.client.pipeline(transaction=False)
            for key in (self.data, self.ack, self.meta):
                pipe.expire(key, max(1, int(seconds)))
            pipe.execute()

    # -- both sides --------------------------------------------------------------------

    def post(self, control: Control) -> None:
        """Append a control entry and set the TTLs.

        An ack refreshes the keys' full TTL; a cancel, close or error ends the transfer,
        so its keys then live only :data:`FAILED_TTL` seconds (long enough for the other
        side to read why).
        """
        with self.conn.mapped_errors(f"post {control.kind} to {self.ack!r}", command="XADD"):
            pipe = self.conn.client.pipeline(transaction=False)
            self._queue_control(pipe, control)
            pipe.execute()

    def _queue_control(self, pipe: Any, control: Control) -> None:
        if control.kind == "ack":
            # Before the XADD: once the sender sees the final ack it deletes the keys,
            # and a later HSET would recreate the meta hash.
            pipe.hset(self.meta, _ack_field(control.sender), f"{control.seq} {control.off}")
        pipe.xadd(self.ack, {CONTROL_FIELD: control.model_dump_json()})
        self._refresh(pipe, None if control.kind == "ack" else min(FAILED_TTL, self.ttl))

    def load(self) -> Announce | None:
        """The stored announcement, or None when the transfer is gone."""
        with self.conn.mapped_errors(f"read transfer {self.meta!r}", command="HGET"):
            raw = self.conn.client.hget(self.meta, _ANNOUNCE)
        return None if raw is None else decode(Announce, raw, f"announcement of stream {self.sid}")

    def acked(self, target: str) -> Position:
        """The position ``target`` last acknowledged (nothing if it never did)."""
        with self.conn.mapped_errors(f"read transfer {self.meta!r}", command="HGET"):
            raw = self.conn.client.hget(self.meta, _ack_field(target))
        if raw is None:
            return Position()
        seq, off = raw.split()
        return Position(int(seq), int(off))

    # -- receiver side -----------------------------------------------------------------

    def read(
        self,
        data_from: str,
        ack_from: str,
        count: int,
        ack: Control | None = None,
        block_ms: int = POLL_MS,
    ) -> tuple[list[tuple[bytes, Frame]], list[tuple[bytes, Control]]]:
        """Block up to ``block_ms`` for chunk frames and controls, in one XREAD.

        Args:
            data_from: Data-stream id after which to read.
            ack_from: Ack-stream id after which to read.
            count: Most entries per stream.
            ack: An acknowledgement to post in the same round trip, before reading.
            block_ms: Longest wait.

        Returns:
            ``(frames, controls)``, each as ``(entry_id, item)`` lists.
        """
        streams = {self.data: data_from, self.ack: ack_from}
        block = min(block_ms, MAX_BLOCK_MS)
        with self.conn.mapped_errors(f"read chunks of {self.data!r}", command="XREAD"):
            if ack is None:
                reply = self.conn.blocking.xread(streams, count=count, block=block)
            else:
                pipe = self.conn.blocking.pipeline(transaction=False)
                self._queue_control(pipe, ack)
                pipe.xread(streams, count=count, block=block)
                reply = pipe.execute()[-1]
        frames: list[tuple[bytes, Frame]] = []
        controls: list[tuple[bytes, Control]] = []
        for key, entries in stream_entries(reply):
            if _text(key) == self.data:
                frames += [(eid, self._frame(fields)) for eid, fields in entries]
            else:
                controls += self._parse_controls(entries)
        return frames, controls

    def _frame(self, fields: dict[bytes, bytes]) -> Frame:
        header = decode(ChunkHeader, fields[HEADER_FIELD], f"chunk header of stream {self.sid}")
        return Frame(header, fields.get(DATA_FIELD, b""))

    def _controls(self, reply: Any) -> list[tuple[bytes, Control]]:
        out: list[tuple[bytes, Control]] = []
        for _, entries in stream_entries(reply):
            out += self._parse_controls(entries)
        return out

    def _parse_controls(
        self, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]
    ) -> list[tuple[bytes, Control]]:
        out = []
        for eid, fields in entries:
            try:
                out.append(
                    (eid, decode(Control, fields[CONTROL_FIELD], f"control of stream {self.sid}"))
                )
            except (StreamError, KeyError):
                # A foreign or newer entry must not kill the transfer; skip it loudly.
                logger.warning(
                    "Skipping an unreadable control entry %r of stream %s.", eid, self.sid
                )
        return out

    def _refresh(self, pipe: Any, ttl: float | None = None) -> None:
        for key in (self.data, self.ack, self.meta):
            pipe.expire(key, max(1, int(ttl or self.ttl)))


def _ack_field(target: str) -> str:
    return f"ack:{target}"


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key

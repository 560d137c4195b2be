"""A cell's durable inbox: the Redis stream where senders announce transfers.

Senders append one :class:`~framework.cell.frames.Announce` per target; the target cell
reads its inbox through a consumer group named after the cell, so an announcement stays
in the group's pending list until the transfer ends. A cell started after the send still
finds it, and a restarted cell with the same name finds its unfinished transfers there
(``XREADGROUP ... 0``). Handled entries are acknowledged and deleted.

Anyone who can write to Redis can write here too. An entry carries the announcement
(field ``a``) and, from a sender with a key, its MAC (field ``m``); the inbox of a cell
with a key checks it (:func:`~framework.cell.auth.check_announcement`) before anything
acts on the announcement. A forged, altered or foreign one is logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from framework.cell.auth import BadAnnouncementError, check_announcement
from framework.cell.frames import ANNOUNCE_FIELD, MAC_FIELD, Announce, decode
from framework.cell.transport import POLL_MS
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import BackendError, FrameworkError
from framework.redis_streams import ensure_group, is_missing_group, stream_entries

__all__ = ["GROUP", "Inbox", "announce"]

logger = logging.getLogger(__name__)

#: Consumer group of every inbox (one consumer: the cell).
GROUP = "cell"
#: Announcements fetched per read.
_COUNT = 100

#: An inbox entry: its id and the announcement (None if unreadable).
Entry = tuple[bytes, "Announce | None"]


def announce(
    conn: RedisConnection, target: str, message: Announce, ttl: float, mac: bytes | None = None
) -> None:
    """Append ``message`` (and its MAC, if signed) to ``target``'s inbox; refresh its TTL.

    Uses the non-retrying client: an automatic-id ``XADD`` must not be resent blindly
    (a receiver would also drop a duplicate by stream id).

    Raises:
        BackendError: If Redis fails.
    """
    key = conn.keys.inbox(target)
    with conn.mapped_errors(f"announce stream {message.sid} in {key!r}", command="XADD"):
        pipe = conn.once.pipeline(transaction=False)
        fields: dict[bytes, Any] = {ANNOUNCE_FIELD: message.model_dump_json()}
        if mac is not None:
            fields[MAC_FIELD] = mac
        pipe.xadd(key, fields)
        pipe.expire(key, max(1, int(ttl)))
        pipe.execute()


class Inbox:
    """The receiving end of one cell's inbox.

    Args:
        conn: The connection.
        cell: The cell's name (also its consumer name).
        ttl: Seconds the inbox lives without a refresh.
        key: The cell key; with it, announcements are authenticated (see the module).
            Without it only the target is checked.
    """

    def __init__(
        self, conn: RedisConnection, cell: str, ttl: float, key: bytes | None = None
    ) -> None:
        self.conn = conn
        self.cell = cell
        self._key = key
        self.key = conn.keys.inbox(cell)
        self.ttl = max(1, int(ttl))
        #: Announcements for this cell whose MAC failed (see :meth:`take_unverified`).
        self.unverified: list[Announce] = []

    def ensure(self) -> None:
        """Create the inbox and its group if missing, and refresh its TTL."""
        # Start at 0: announcements sent before the cell first started count too.
        ensure_group(self.conn, self.key, GROUP, start="0", ttl_ms=None)
        with self.conn.mapped_errors(f"refresh the TTL of inbox {self.key!r}", command="EXPIRE"):
            self.conn.client.expire(self.key, self.ttl)

    def pending(self) -> list[Entry]:
        """Announcements delivered to this cell earlier but not finished (after a restart)."""
        out: list[Entry] = []
        start = "0"
        while True:
            batch = self._read(start, block=None)
            if not batch:
                return out
            out += batch
            start = batch[-1][0].decode()

    def receive(self, block_ms: int = POLL_MS) -> list[Entry]:
        """Wait up to ``block_ms`` for new announcements."""
        return self._read(">", block=min(block_ms, MAX_BLOCK_MS))

    def done(self, entry_id: bytes) -> None:
        """Acknowledge and delete a handled announcement."""
        with self.conn.mapped_errors(
            f"acknowledge entry {entry_id!r} of {self.key!r}", command="XACK"
        ):
            pipe = self.conn.client.pipeline(transaction=False)
            pipe.xack(self.key, GROUP, entry_id)
            pipe.xdel(self.key, entry_id)
            pipe.execute()

    def _read(self, start: str, block: int | None) -> list[Entry]:
        client = self.conn.client if block is None else self.conn.blocking
        try:
            with self.conn.mapped_errors(f"read inbox {self.key!r}", command="XREADGROUP"):
                reply = client.xreadgroup(
                    GROUP, self.cell, {self.key: start}, count=_COUNT, block=block
                )
        except BackendError as exc:
            if not is_missing_group(exc):
                raise
            # The inbox expired or was deleted while we ran: recreate it.
            self.ensure()
            return []
        return [
            (eid, self._parse(eid, fields))
            for _, entries in stream_entries(reply)
            for eid, fields in entries
        ]

    def _parse(self, eid: bytes, fields: Any) -> Announce | None:
        if not fields:
            return None  # deleted while pending: XREADGROUP 0 returns empty fields
        raw = fields.get(ANNOUNCE_FIELD)
        if raw is None:
            logger.warning(
                "Dropping entry %r in %s: it holds no announcement (fields %s).",
                eid,
                self.key,
                sorted(fields)[:8],
            )
            return None
        where = f"announcement {eid!r} in {self.key!r}"
        try:
            ann = decode(Announce, raw, where)
        except FrameworkError as exc:  # its message names what is wrong: no traceback
            logger.warning("Dropping unreadable announcement %r in %s: %s", eid, self.key, exc)
            return None
        try:
            check_announcement(ann, bytes(raw), fields.get(MAC_FIELD), self._key, self.cell, where)
        except BadAnnouncementError as exc:
            logger.warning("Ignoring an announcement: %s", exc)
            if self.cell in ann.targets:  # its MAC failed: the sender may hold another key
                self.unverified.append(ann)
            return None
        return ann

    def take_unverified(self) -> list[Announce]:
        """Announcements for this cell whose MAC failed, read since the last call."""
        taken, self.unverified = self.unverified, []
        return taken

"""A cell's object-protocol mailbox: the Redis stream small messages travel on.

Each engine reads one stream, ``fw:cell:{<name>}:objects``, created empty when the
engine starts (so a sender can tell a listening target from an unknown one: ``XADD
NOMKSTREAM`` to a missing mailbox writes nothing and reports it) and deleted when it
closes. Every write refreshes the key's TTL, and so does every read, so a crashed
engine's mailbox expires. The reader deletes what it has handled in the same round
trip as its next ``XREAD BLOCK``. A retried ``XADD`` can duplicate an entry; the protocol
makes that harmless (sequence numbers, first reply wins).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from framework.cell.transport import stream_entries
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import BackendError

__all__ = ["MailEntry", "Mailbox"]

logger = logging.getLogger(__name__)

#: An entry of a mailbox: its id and its fields.
MailEntry = tuple[bytes, dict[bytes, Any]]
#: Field of the entry :meth:`Mailbox.wake` appends.
WAKE_FIELD = b"wake"
#: Consumer group that only exists so ``XGROUP CREATE ... MKSTREAM`` can make an empty stream.
_GROUP = "engine"


class Mailbox:
    """The mailbox of the cell ``name``, and writes to other cells' mailboxes.

    Args:
        conn: The connection.
        name: The cell's name.
        ttl: Seconds a mailbox lives without a read or write.
        count: Entries fetched per read.
    """

    def __init__(self, conn: RedisConnection, name: str, ttl: float, count: int = 256) -> None:
        self.conn = conn
        self.name = name
        self.key = conn.keys.mailbox(name)
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.count = count
        self._after = "0-0"
        self._handled: list[bytes] = []

    def create(self) -> None:
        """Create the (empty) mailbox if missing and set its TTL.

        Raises:
            BackendError: If Redis fails.
        """
        with self.conn.mapped_errors(f"create mailbox {self.key!r}", command="XGROUP"):
            try:
                self.conn.client.xgroup_create(self.key, _GROUP, id="$", mkstream=True)
            except Exception as exc:  # redis ResponseError; anything else is mapped on re-raise
                if "BUSYGROUP" not in str(exc):
                    raise
            self.conn.client.pexpire(self.key, self.ttl_ms)

    def post(self, targets: Iterable[str], fields: dict[bytes, Any]) -> dict[str, bool]:
        """Append ``fields`` to each target's mailbox in one round trip.

        Returns:
            Per target: True if written, False if it has no mailbox (no engine listens).

        Raises:
            BackendError: If Redis fails.
        """
        names = list(targets)
        keys = [self.conn.keys.mailbox(t) for t in names]
        with self.conn.mapped_errors(f"post to mailboxes {keys}", command="XADD"):
            pipe = self.conn.client.pipeline(transaction=False)
            for key in keys:
                pipe.xadd(key, fields, nomkstream=True)
                pipe.pexpire(key, self.ttl_ms)
            results = pipe.execute()
        return {name: results[2 * i] is not None for i, name in enumerate(names)}

    def listening(self, targets: Iterable[str]) -> dict[str, bool]:
        """Per target: whether its mailbox exists (an engine listens).

        Raises:
            BackendError: If Redis fails.
        """
        names = list(targets)
        with self.conn.mapped_errors("check mailboxes", command="EXISTS"):
            pipe = self.conn.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(self.conn.keys.mailbox(name))
            found = pipe.execute()
        return {name: bool(n) for name, n in zip(names, found, strict=True)}

    def read(self, block_ms: int = MAX_BLOCK_MS) -> list[MailEntry] | None:
        """Delete what was handled, then wait up to ``block_ms`` for new entries.

        Returns:
            The new entries; None if the mailbox is gone (expired or deleted) and was
            recreated, so the caller knows messages may have been lost.

        Raises:
            BackendError: If Redis fails.
        """
        block = min(block_ms, MAX_BLOCK_MS)
        with self.conn.mapped_errors(f"read mailbox {self.key!r}", command="XREAD"):
            pipe = self.conn.blocking.pipeline(transaction=False)
            if self._handled:
                pipe.xdel(self.key, *self._handled)
            pipe.pexpire(self.key, self.ttl_ms)
            pipe.xread({self.key: self._after}, count=self.count, block=block)
            *_, refreshed, reply = pipe.execute()
        self._handled = []
        if not refreshed:
            logger.warning("Mailbox %s was gone (expired or deleted): recreating it.", self.key)
            self.create()
            return None
        entries = [e for _, batch in stream_entries(reply) for e in batch]
        if entries:
            self._after = entries[-1][0].decode()
            self._handled = [eid for eid, _ in entries]
        return entries

    def wake(self) -> None:
        """Append a wake-up entry so a reader blocked on this mailbox returns now."""
        try:
            with self.conn.mapped_errors(f"wake mailbox {self.key!r}", command="XADD"):
                self.conn.client.xadd(self.key, {WAKE_FIELD: b""}, nomkstream=True)
        except BackendError:
            logger.debug("Could not wake the reader of %s; it wakes within 1 s.", self.key)

    def delete(self) -> None:
        """Delete the mailbox (on close); unread messages go with it."""
        try:
            with self.conn.mapped_errors(f"delete mailbox {self.key!r}", command="DEL"):
                self.conn.client.delete(self.key)
        except BackendError:
            logger.warning("Could not delete mailbox %s; its TTL removes it.", self.key)

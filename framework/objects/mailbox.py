"""Mailboxes: the Redis streams small object-protocol messages travel on.

Each engine reads one stream, ``fw:cell:{<name>}:objects``, for objects and end notices,
and each running ``stream_objects`` call one more, ``fw:cell:{<name>}:replies:<tx>``,
for its replies, so the waiting thread reads them itself. A mailbox is created empty by
its reader (so a writer can tell a listening reader from none: ``XADD NOMKSTREAM`` to a
missing stream writes nothing and reports it) and deleted when the reader is done; every
read refreshes its TTL, so a crashed reader's mailbox expires. The reader deletes what
it has handled in the same round trip as its next ``XREAD BLOCK`` (built by
:mod:`framework.objects._mail_upkeep`). A retried ``XADD`` can duplicate an entry; the
protocol makes that harmless (sequence numbers, first reply wins).

A mailbox key that something else overwrote (``SET`` on it, say: Redis then answers
``WRONGTYPE``) is deleted and created again by its reader, with a warning: the entries it
held were lost when it was overwritten, and their senders resend or time out as for any
lost message.

Readers ride out dropped connections (``CLIENT KILL``, a restart): a read whose connection
fails is made again on a fresh one, with a short backoff, until the mailbox's patience (the
session idle timeout) runs out. Every read is safe to repeat: an ``XREAD`` resumes after the
last id seen, and a group reader reads with acknowledgement, so an entry whose reply was
lost on the dropped connection is still pending for it and is read again from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from framework.cell.reconnect import with_reconnect
from framework.connection import MAX_BLOCK_MS, RedisConnection
from framework.exceptions import BackendError, BackendTimeout, BackendUnavailable, FrameworkError
from framework.objects._mail_upkeep import GROUP, MailEntry, Write, mail_entries, upkept_read
from framework.objects.lane import Command, Lane
from framework.objects.sending import Reach

__all__ = ["MailEntry", "Mailbox"]

logger = logging.getLogger(__name__)

#: Field of the entry :meth:`Mailbox.wake` appends.
WAKE_FIELD = b"wake"
#: Longest pause (s) between TTL refreshes (and checks that the mailbox still exists).
_REFRESH_EVERY = 5.0
#: Deletes KEYS[1] unless it is a stream; returns its type. Checked and deleted at once:
#: another reader of the mailbox may have created it again meanwhile.
_DROP_FOREIGN = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'stream' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
return kind
"""

_T = TypeVar("_T")


def post(conn: RedisConnection, keys: list[str], fields: dict[bytes, Any]) -> list[Reach]:
    """Append ``fields`` to each mailbox in ``keys``, in one round trip.

    Returns:
        Per key: True if written, False if there is no mailbox (no reader), or its error.

    Raises:
        BackendError: If Redis fails (on a cluster: for every key).
    """
    return each_key(conn, keys, "post to", "xadd", fields, nomkstream=True)


def each_key(
    conn: RedisConnection, keys: list[str], verb: str, method: str, *args: Any, **kw: Any
) -> list[Reach]:
    """Per key, whether ``method(key, *args, **kw)`` found the stream; one round trip.

    A cluster pipeline fails as a whole when one node does (a master killed before its
    replica is promoted): each key is then asked on its own, so keys on healthy nodes
    get through. A write that reached a node before the pipeline failed is made again;
    the protocol makes the copy harmless.

    Raises:
        BackendError: If Redis fails (on a cluster: for every key).
    """

    def run(some: list[str]) -> list[Reach]:
        with conn.mapped_errors(f"{verb} {some}", command=method.upper()):
            if len(some) == 1:
                return [bool(getattr(conn.client, method)(some[0], *args, **kw))]
            pipe = conn.client.pipeline(transaction=False)
            for key in some:
                getattr(pipe, method)(key, *args, **kw)
            return [bool(reply) for reply in pipe.execute()]

    try:
        return run(keys)
    except BackendError as exc:
        if not conn.is_cluster or len(keys) < 2:
            raise  # one server (or key): the failure is every key's, as it always was
        logger.debug("%s on %d keys failed (%s); trying each key.", method, len(keys), exc)
    outcomes: list[Reach] = []
    for key in keys:
        try:
            outcomes += run([key])
        except BackendError as exc:
            outcomes.append(exc)
    failed = [o for o in outcomes if isinstance(o, BackendError)]
    if len(failed) == len(keys):
        raise failed[0]  # as on one server: the caller fails every key
    return outcomes


class Mailbox:
    """The reading end of one mailbox.

    Args:
        conn: The connection.
        key: The mailbox's stream key.
        ttl: Seconds the mailbox lives without a read.
        count: Entries fetched per read.
        delete_every: Handled entries gathered before they are deleted.
        patience: Seconds a read retries after dropped connections before it raises.
        stop: When set, a read that lost its connection raises at once (closing).
    """

    def __init__(
        self,
        conn: RedisConnection,
        key: str,
        ttl: float,
        count: int = 256,
        delete_every: int = 1,
        *,
        patience: float,
        stop: threading.Event,
    ) -> None:
        self.conn = conn
        self.key = key
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.count = count
        self.delete_every = delete_every
        self.patience = patience
        self.stop = stop
        self._after = "0-0"
        self._handled: list[bytes] = []
        self._refresh_at = 0.0
        self._reading = f"reading mailbox {key}"
        # For read_after, which one thread at a time calls.
        self._lane = Lane(conn, f"read mailbox {key!r}")

    def create(self) -> None:
        """Create the (empty) mailbox if missing and set its TTL.

        Raises:
            BackendError: If Redis fails.
        """
        with self.conn.mapped_errors(f"create mailbox {self.key!r}", command="XGROUP"):
            try:
                self.conn.client.xgroup_create(self.key, GROUP, id="$", mkstream=True)
            except Exception as exc:  # redis ResponseError; anything else is mapped on re-raise
                if "BUSYGROUP" not in str(exc):
                    raise
            self.conn.client.pexpire(self.key, self.ttl_ms)

    def read(
        self, block_ms: int = MAX_BLOCK_MS, patience: float | None = None
    ) -> list[MailEntry] | None:
        """Delete what was handled, then wait up to ``block_ms`` (:meth:`read_after`, no writes).

        Raises:
            BackendError: If Redis fails.
        """
        return self.read_after([], block_ms, patience)[1]

    def read_after(
        self, writes: list[Write], block_ms: int = MAX_BLOCK_MS, patience: float | None = None
    ) -> tuple[list[bool], list[MailEntry] | None]:
        """Append ``writes`` to other mailboxes, then read this one: one round trip.

        Handled entries are deleted in the same round trip as the read, once
        ``delete_every`` have gathered. Every few seconds the read also refreshes the TTL
        and notices a mailbox that vanished (Redis restarted without persistence). After
        a dropped connection the read is made again for up to ``patience`` seconds
        (default: the mailbox's).

        Returns:
            Per write whether its mailbox existed, and the new entries (None if this
            mailbox was gone (expired, deleted or overwritten) and has been recreated, so the caller
            knows messages may have been lost).

        Raises:
            BackendError: If Redis fails.
        """
        block = min(block_ms, MAX_BLOCK_MS)
        delete = len(self._handled) >= self.delete_every
        refresh = time.monotonic() >= self._refresh_at

        read = ("XREAD", "COUNT", self.count, "BLOCK", block, "STREAMS", self.key, self._after)
        handled = self._handled if delete else []
        # Repeatable: the read resumes after the last id seen; a repeated write or delete
        # is harmless.
        attempt = partial(upkept_read, self, self._lane, handled, refresh, read, writes)
        try:
            gone, reply, written = self.ride_out(attempt, patience)
        except BackendError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            # Overwritten with another type: replaced, as a vanished one. The writes of
            # the round trip may or may not have gone: the caller's error path resends.
            self.drop_foreign()
            self._handled = []
            self.create()
            if writes:
                raise
            return [], None
        if refresh:
            self._refresh_at = time.monotonic() + min(self.ttl_ms / 4000, _REFRESH_EVERY)
        if gone:
            self.recreate()
            return written, None
        if delete:
            self._handled = []
        entries = mail_entries(reply)
        if entries:
            self._after = entries[-1][0].decode()
            self._handled += [eid for eid, _ in entries]
        return written, entries

    def ride_out(self, attempt: Callable[[], _T], patience: float | None = None) -> _T:
        """Run the repeatable read ``attempt``, again after dropped connections.

        Args:
            attempt: The read.
            patience: Seconds to keep trying (default: the mailbox's).

        Raises:
            BackendUnavailable: Redis stayed unreachable for ``patience`` seconds.
            BackendError: Whatever else ``attempt`` raised, unchanged.
        """
        patience = self.patience if patience is None else patience
        return with_reconnect(attempt, patience=patience, stop=self.stop, what=self._reading)

    def recreate(self) -> None:
        """Recreate the mailbox after it vanished (expired, deleted, Redis restarted)."""
        logger.warning("Mailbox %s was gone (expired or deleted): recreating it.", self.key)
        self._handled = []
        self.create()

    def drop_foreign(self) -> None:
        """Delete the mailbox key if it holds something other than a stream.

        The reader that met ``WRONGTYPE`` then recreates the mailbox, as a vanished one.

        Raises:
            BackendError: If Redis fails.
        """
        with self.conn.mapped_errors(f"check the type of mailbox {self.key!r}", command="EVAL"):
            kind = self.conn.client.eval(_DROP_FOREIGN, 1, self.key)
        kind = kind.decode(errors="replace") if isinstance(kind, bytes) else str(kind)
        if kind not in ("stream", "none"):
            logger.warning(
                "Mailbox %s held a %s, not a stream: something else overwrote it, and the "
                "messages it held are lost (their senders resend or time out). Deleted.",
                self.key,
                kind,
            )

    def reader(self, consumer: str) -> GroupReader:
        """A reader that shares this mailbox's entries with the other readers (one each)."""
        return GroupReader(self, consumer)

    def wake(self) -> None:
        """Append a wake-up entry so a reader blocked on this mailbox returns now.

        Never raises: a reader that is not woken returns within its bounded block.
        """
        try:
            with self.conn.mapped_errors(f"wake mailbox {self.key!r}", command="XADD"):
                self.conn.client.xadd(self.key, {WAKE_FIELD: b""}, nomkstream=True)
        except FrameworkError as exc:  # Redis failing, or the connection closed (ClosedError)
            logger.debug(
                "Could not wake the reader of %s (%s); it wakes within 1 s.", self.key, exc
            )

    def delete(self) -> None:
        """Delete the mailbox (on close); unread messages go with it.

        The connection its reads held goes back to the pool. Never raises: a mailbox
        that cannot be deleted (Redis failing, the connection closed) expires.
        """
        self._lane.close()
        try:
            with self.conn.mapped_errors(f"delete mailbox {self.key!r}", command="DEL"):
                self.conn.client.delete(self.key)
        except FrameworkError as exc:
            logger.warning("Could not delete mailbox %s (%s); its TTL removes it.", self.key, exc)


class GroupReader:
    """One of several threads reading a mailbox through its consumer group.

    Each entry goes to one reader, so the threads that run the consumers read for
    themselves and no message is handed from thread to thread. Handled entries are
    acknowledged and deleted in batches, in the same round trip as a later read: after
    ``delete_every`` entries, or as soon as the mailbox is quiet. When a read loses its
    connection, Redis may have delivered an entry whose reply never arrived: it stays
    pending for this reader, which reads its own pending entries (skipping those it has
    handled) before new ones. (A message whose reader dies is lost like any message to a
    dead engine; its sender sends it again or its wait times out.) Redis does not answer
    the replies a reader writes, so a reader blocked in its read is woken only by the next
    entry; a reply whose sender's mailbox is gone is dropped unnoticed (that sender has
    stopped waiting).

    Args:
        mailbox: The mailbox.
        consumer: This reader's name in the group.
        delete_every: Handled entries gathered before they are deleted while busy.
    """

    def __init__(self, mailbox: Mailbox, consumer: str, delete_every: int = 32) -> None:
        self.mailbox = mailbox
        self.consumer = consumer
        self.delete_every = delete_every
        self._handled: list[bytes] = []
        self._quiet = False
        self._refresh_at = 0.0
        self._recovering = False
        # This reader's own: one reader per thread.
        self._lane = Lane(mailbox.conn, f"read mailbox {mailbox.key!r}")

    def read(
        self, block_ms: int = MAX_BLOCK_MS, writes: list[Write] | None = None
    ) -> list[MailEntry]:
        """Wait up to ``block_ms`` for the next entry (deleting handled ones on the way).

        Args:
            block_ms: Longest wait.
            writes: Messages to append first, in the same round trip (a worker's
                replies to what it read last).

        Raises:
            BackendError: If Redis fails (for a dropped connection: after the mailbox's
                patience).
        """
        box = self.mailbox
        delete = bool(self._handled) and (self._quiet or len(self._handled) >= self.delete_every)
        refresh = time.monotonic() >= self._refresh_at
        block = min(block_ms, MAX_BLOCK_MS)
        attempt = partial(self._attempt, block, delete, refresh, writes or [])
        gone, reply, recovered = box.ride_out(attempt)
        if delete:
            self._handled = []
        if refresh or gone:
            self._refresh_at = time.monotonic() + min(box.ttl_ms / 4000, _REFRESH_EVERY)
        if gone:
            self._handled = []
            box.recreate()
            return []
        entries = mail_entries(reply)
        if recovered:  # own pending entries: some may be handled already, or deleted
            handled = set(self._handled)
            self._handled += [eid for eid, fields in entries if not fields]
            entries = [(eid, f) for eid, f in entries if f and eid not in handled]
        self._quiet = not entries
        self._handled += [eid for eid, _ in entries]
        return entries

    def _attempt(
        self, block: int, delete: bool, refresh: bool, writes: list[Write]
    ) -> tuple[bool, Any, bool]:
        """One round trip of :meth:`read`.

        Returns:
            Whether the mailbox was gone, the reply, and whether the reply holds this
            reader's pending entries.
        """
        recovering = self._recovering
        handled = self._handled if delete else []
        read = self._xreadgroup(block, recovering)
        try:
            gone, reply, _ = upkept_read(
                self.mailbox, self._lane, handled, refresh, read, writes, group=True
            )
        except (BackendUnavailable, BackendTimeout):
            self._recovering = True  # the lost reply may have delivered entries
            raise
        except BackendError as exc:
            if "WRONGTYPE" in str(exc):  # overwritten: dropped, then recreated as a vanished one
                self.mailbox.drop_foreign()
            # The mailbox vanished: Redis says NOGROUP; fakeredis says the key must exist.
            elif "NOGROUP" not in str(exc) and "requires the key to exist" not in str(exc):
                raise
            self._recovering = False  # a new group has nothing pending
            return True, None, False
        self._recovering = False
        return gone, reply, recovering

    def _xreadgroup(self, block: int, pending: bool) -> Command:
        head = ("XREADGROUP", "GROUP", GROUP, self.consumer)
        if pending:  # all of this reader's pending entries, at once (no BLOCK for those)
            return (*head, "STREAMS", self.mailbox.key, "0")
        return (*head, "COUNT", 1, "BLOCK", block, "STREAMS", self.mailbox.key, ">")

    def close(self) -> None:
        """Give this reader's connection back to the pool; idempotent."""
        self._lane.close()

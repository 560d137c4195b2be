"""Where the replies of running ``stream_objects`` calls go: one mailbox per session.

A sending call opens a reply mailbox (``fw:cell:{<cell>}:replies:<tx>``) and reads it in
its own thread while it waits (:meth:`Replies.collect`), so a reply reaches the waiting
thread without a hand-off. Replies that arrive as byte streams come in on the cell's
thread; :meth:`Replies.deliver` files them and wakes the reader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from framework._failures import RepeatedFailure
from framework.connection import RedisConnection
from framework.exceptions import BackendError, DeserializationError, FrameworkError
from framework.objects._mail_upkeep import Write
from framework.objects.envelope import (
    ENVELOPE_FIELD,
    PAYLOAD_FIELD,
    Envelope,
    addressed_to,
    decode_envelope,
)
from framework.objects.mailbox import WAKE_FIELD, Mailbox, MailEntry
from framework.objects.session import ReplySlots
from framework.objects.shareable import ReservedHeaderKey, ReturnCode, Shareable, error_reply

__all__ = ["Replies", "envelope_of"]

logger = logging.getLogger(__name__)


def envelope_of(eid: bytes, fields: dict[bytes, Any], key: str) -> Envelope | None:
    """The envelope of a mailbox entry, or None (logged) if it has none or a bad one."""
    try:
        return decode_envelope(fields.get(ENVELOPE_FIELD), "mailbox entry")
    except FrameworkError as exc:  # the entry is named here: every message comes this way
        logger.warning("Dropping an unreadable message (entry %r of %r): %s", eid, key, exc)
        return None


class Replies:
    """The reply mailboxes and reply slots of one engine's running sends.

    Args:
        conn: The connection.
        name: The engine's cell name.
        ttl: Seconds a reply mailbox lives without a read.
        opener: Verifies and deserializes a payload (``open_payload`` with the engine's
            secret and pickle policy).
        stop: Set when the engine closes: ends waits and reconnect attempts early.
        patience: Seconds a read retries after dropped connections before it fails.
    """

    def __init__(
        self,
        conn: RedisConnection,
        name: str,
        ttl: float,
        opener: Callable[[Envelope, Any], Any],
        stop: threading.Event,
        patience: float,
    ) -> None:
        self.conn = conn
        self.name = name
        self.ttl = ttl
        self._open = opener
        self._stop = stop
        self._patience = patience
        self._lock = threading.Lock()
        self._slots: dict[str, ReplySlots] = {}
        self._boxes: dict[str, Mailbox] = {}
        # Per session: an outage fails each poll (every 50 ms); logged once, not each time.
        self._failures: dict[str, RepeatedFailure] = {}

    def open(self, tx: str) -> None:
        """Create the reply mailbox of session ``tx``.

        Raises:
            BackendError: If Redis fails.
        """
        # Deleted with the session: no need to delete every reply as it is read.
        box = Mailbox(
            self.conn,
            self.conn.keys.replies(self.name, tx),
            self.ttl,
            delete_every=64,
            patience=self._patience,
            stop=self._stop,
        )
        box.create()
        with self._lock:
            self._boxes[tx] = box
            self._failures[tx] = RepeatedFailure(logger, f"Reading the replies of stream {tx}")

    def close(self, tx: str) -> None:
        """Delete the reply mailbox of session ``tx``."""
        with self._lock:
            box = self._boxes.pop(tx, None)
            self._failures.pop(tx, None)
        if box is not None:
            box.delete()

    def expect(self, tx: str, slots: ReplySlots | None) -> None:
        """File replies of session ``tx`` into ``slots`` (None: stop filing)."""
        with self._lock:
            if slots is None:
                self._slots.pop(tx, None)
            else:
                self._slots[tx] = slots

    def collect(self, tx: str, block: float) -> None:
        """Read the replies of session ``tx`` (in the caller's thread) for up to ``block`` s."""
        box, failures = self._boxes[tx], self._failures[tx]
        try:
            # Retried within this poll only: the caller's wait checks its deadline and abort.
            entries = box.read(max(1, int(block * 1000)), patience=block) or []
        except BackendError as exc:  # the wait goes on until the producer's timeout
            failures.failed(exc)
            self._stop.wait(min(block, 0.1))
            return
        failures.succeeded()
        self._file_entries(tx, box, entries)

    def post_and_collect(
        self, tx: str, writes: list[Write], block: float, patience: float | None = None
    ) -> list[bool] | None:
        """Append ``writes`` and read replies of ``tx`` in one round trip.

        After a dropped connection the round trip is made again for up to ``patience``
        seconds (default: the idle timeout); a repeated write is harmless.

        Returns:
            Per write whether its mailbox existed; None if ``tx`` has no reply mailbox
            here (the caller then posts on its own).

        Raises:
            BackendError: If Redis fails.
        """
        with self._lock:
            box = self._boxes.get(tx)
        if box is None:
            return None
        written, entries = box.read_after(writes, max(1, int(block * 1000)), patience)
        self._file_entries(tx, box, entries or [])
        return written

    def _file_entries(self, tx: str, box: Mailbox, entries: list[MailEntry]) -> None:
        for eid, fields in entries:
            if WAKE_FIELD not in fields:
                env = envelope_of(eid, fields, box.key)
                if env is None or env.kind != "reply" or env.tx != tx:
                    continue
                if addressed_to(env, self.name):
                    self.file(env, fields.get(PAYLOAD_FIELD, b""))

    def deliver(self, env: Envelope, payload: Any) -> None:
        """File a reply that came as a byte stream and wake its waiting reader."""
        self.file(env, payload)
        with self._lock:
            box = self._boxes.get(env.tx)
        if box is not None:
            box.wake()

    def file(self, env: Envelope, payload: Any) -> None:
        """Verify a reply and put it in its slot (ignored, and logged, if it does not verify).

        A reply that verifies (signed, with a secret) and is bound to its envelope but
        cannot be deserialized here (``allow_pickle=False`` refuses the target's pickled
        reply) fills the slot with BAD_REQUEST_DATA naming why: no other reply will
        come, and the sender would otherwise wait out its timeout.
        """
        with self._lock:
            slots = self._slots.get(env.tx)
        if slots is None:
            logger.debug("The %s came after its stream stopped waiting.", env.describe())
            return
        try:
            reply = self._open(env, payload)
            if not isinstance(reply, Shareable):
                raise FrameworkError(f"it holds a {type(reply).__name__}, not a Shareable")
        except DeserializationError as exc:
            logger.warning("Cannot read the %s: %s", env.describe(), exc)
            why = f"The {env.describe()} cannot be read here: {exc}"
            reply = error_reply(ReturnCode.BAD_REQUEST_DATA, why)
        except FrameworkError as exc:
            # Not filled: the genuine reply may still come, else the slot times out.
            logger.warning("Ignoring the %s: %s", env.describe(), exc)
            return
        if env.ended:
            reply.set_header(ReservedHeaderKey.SESSION_ENDED, True)
        slots.fill(env.origin, env.seq, reply)

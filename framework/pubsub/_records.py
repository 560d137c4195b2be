"""Producer records of a topic's producers hash, signed when a shared secret is set.

Consumers of durable and list topics act on what a topic's producers hash says of each
producer (``open:<run>``, ``open:<run>:live``, ``end:<run>``; see :mod:`.lists` and
:mod:`._stream_publisher`): group members and competing list consumers end a topic
once every producer recorded there has ended. Anyone who can write to Redis could
otherwise end them while a producer still sends, losing its later objects silently.

So a producer with a secret signs each record it writes: ``<state>|<MAC>``, the MAC
(HMAC-SHA256, hex) over the kind of topic, the topic, the producer and the state, with a
key derived from the secret. A record copied to another producer, topic or kind of
topic fails there. A consumer with the secret acts only on records that verify, and
logs the others (forged, altered or unsigned) once each. It reads such a record as
:data:`UNTRUSTED`, a state that has neither ended nor stopped beating: a forged record
that replaced a producer's own must not count as that producer gone from the hash, or a
topic whose other producers ended would end on it. Without a secret records are trusted
as they are, as everything read from Redis then is; a signature is just removed.

Pure logic: this module does not talk to Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Final

__all__ = [
    "DURABLE",
    "LIST",
    "SEPARATOR",
    "UNTRUSTED",
    "RecordCheck",
    "record_key",
    "signed_state",
]

logger = logging.getLogger("framework.pubsub")

#: The kinds of topic with a producers hash (signed with each record, named in messages).
DURABLE: Final = "durable topic"
LIST: Final = "list topic"
#: The state read from a record that does not verify: neither open nor ended.
UNTRUSTED: Final = b"untrusted"
#: Separates a record's state from its MAC (states never hold it).
SEPARATOR: Final = "|"
_LABEL: Final = b"fw-producer-record\0"
#: Rejected records remembered, so each is logged once (forgotten past this many).
_REMEMBERED: Final = 1000


def record_key(secret: bytes) -> bytes:
    """The key that signs producer records, derived from the shared ``secret``."""
    return hmac.new(secret, _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, kind: str, topic: str, producer: bytes, state: bytes) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in (kind.encode(), topic.encode(), producer, state):
        # Length-prefixed: no choice of names makes two different records sign alike.
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.hexdigest().encode()


def signed_state(key: bytes | None, kind: str, topic: str, producer: str, state: str) -> str:
    """The record of ``producer``'s ``state`` on ``topic``, signed with ``key`` if given.

    Args:
        key: From :func:`record_key`; ``None`` writes the state as it is.
        kind: The kind of topic (:data:`DURABLE`, :data:`LIST`).
        topic: The topic.
        producer: The producer's id.
        state: Its state (``open:<run>``...).
    """
    if key is None:
        return state
    mac = _mac(key, kind, topic, producer.encode(), state.encode())
    return f"{state}{SEPARATOR}{mac.decode()}"


class RecordCheck:
    """Reads the producer records of one kind of topic, verifying them given a secret.

    Args:
        kind: The kind of topic (:data:`DURABLE`, :data:`LIST`), signed with each record.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._key: bytes | None = None
        self._rejected: set[tuple[str, bytes, bytes]] = set()

    @property
    def signed(self) -> bool:
        """Whether records must be signed (a secret was given)."""
        return self._key is not None

    def verify_with(self, secret: bytes) -> None:
        """From now on, act only on records signed with ``secret``."""
        self._key = record_key(secret)

    def state(self, topic: str, producer: bytes, value: bytes | None) -> bytes | None:
        """The state that ``producer``'s record ``value`` on ``topic`` says.

        Returns:
            The state without its MAC; ``None`` for no record; with a secret,
            :data:`UNTRUSTED` for a record that is unsigned or whose MAC does not match
            (logged once).
        """
        return None if value is None else self._checked(topic, producer, value)

    def read(self, topic: str, records: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
        """The producers hash of ``topic`` as read: producer -> state (see :meth:`state`)."""
        return {producer: self._checked(topic, producer, v) for producer, v in records.items()}

    def _checked(self, topic: str, producer: bytes, value: bytes) -> bytes:
        state, sep, mac = value.partition(SEPARATOR.encode())
        if self._key is None:
            return state
        if sep and hmac.compare_digest(mac, _mac(self._key, self.kind, topic, producer, state)):
            return state
        self._reject(topic, producer, value, "its MAC does not match" if sep else "unsigned")
        return UNTRUSTED

    def _reject(self, topic: str, producer: bytes, value: bytes, why: str) -> None:
        seen = (topic, producer, value)
        if seen in self._rejected:
            return
        if len(self._rejected) >= _REMEMBERED:
            self._rejected.clear()
        self._rejected.add(seen)
        logger.warning(
            "Ignoring the record %r of producer %r in the producers hash of %s %r: %s, "
            "and this subscriber has a secret (forged, or written without the secret). "
            "It counts as a producer that has not ended.",
            value[:80],
            producer[:80],
            self.kind,
            topic,
            why,
        )

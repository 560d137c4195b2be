"""The Redis key schema, in one place.

Every key starts with a configurable prefix (default ``fw``). All keys that one
operation touches together share one hash tag ``{...}``, so multi-key commands,
transactions and scripts work unchanged on Redis Cluster:

=========================  =========================================
what                       key
=========================  =========================================
stored object              ``fw:obj:{<id>}``
part n of a large object   ``fw:obj:{<id>}:<n>``
object read counter        ``fw:obj:{<id>}:readers``
topic, pub/sub channel     ``fw:topic:{<topic>}``
topic, Redis list          ``fw:queue:{<topic>}``
messages a subscriber took ``fw:queue:{<topic>}:taken:<owner>:<gen>``
topic, durable stream      ``fw:events:{<topic>}``
its producers (open/ended) ``fw:events:{<topic>}:end``
a producer's heartbeat     ``fw:events:{<topic>}:alive:<producer>``
cell inbox                 ``fw:cell:{<name>}:inbox``
object-protocol mailbox    ``fw:cell:{<name>}:objects``
replies to one session     ``fw:cell:{<name>}:replies:<tx>``
byte-stream transfer       ``fw:xfer:{<sid>}:data`` / ``:ack`` / ``:meta``
=========================  =========================================

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from dataclasses import dataclass

from framework.exceptions import ConfigurationError

__all__ = ["DEFAULT_PREFIX", "KeySchema"]

#: Prefix of every key the framework writes.
DEFAULT_PREFIX = "fw"

_FORBIDDEN = frozenset("{}")


def _checked(kind: str, name: str) -> str:
    """Reject names that would break hash tags or be ambiguous."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"A {kind} must be a non-empty string, got {name!r}.")
    if _FORBIDDEN & set(name):
        raise ConfigurationError(
            f"A {kind} must not contain '{{' or '}}' (they delimit hash tags): {name!r}."
        )
    return name


def check_topic(topic: str) -> str:
    """Return ``topic`` if it can name a topic's keys.

    Raises:
        ConfigurationError: If it is not a non-empty string or holds ``{`` or ``}``.
    """
    return _checked("topic", topic)


@dataclass(frozen=True)
class KeySchema:
    """Builds every Redis key name from one prefix.

    Args:
        prefix: Namespace for all keys, so several deployments can share one Redis.

    Raises:
        ConfigurationError: If the prefix is empty or contains braces.
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        _checked("key prefix", self.prefix)

    def obj(self, oid: str) -> str:
        """Key of a stored object (or of its manifest when it is split)."""
        return f"{self.prefix}:obj:{{{_checked('object id', oid)}}}"

    def obj_part(self, oid: str, n: int) -> str:
        """Key of part ``n`` of an object too large for one Redis value."""
        return f"{self.obj(oid)}:{n}"

    def obj_readers(self, oid: str) -> str:
        """Key of the remaining-reads counter of a fan-out object."""
        return f"{self.obj(oid)}:readers"

    def oid_of(self, key: str) -> str:
        """Inverse of :meth:`obj`: the object id inside an object key.

        Raises:
            ConfigurationError: If ``key`` is not an object key of this schema.
        """
        head = f"{self.prefix}:obj:{{"
        if not (key.startswith(head) and key.endswith("}")):
            raise ConfigurationError(f"{key!r} is not an object key under prefix {self.prefix!r}.")
        return key[len(head) : -1]

    def topic(self, topic: str) -> str:
        """Pub/sub channel of an object-stream topic."""
        return f"{self.prefix}:topic:{{{_checked('topic', topic)}}}"

    def queue(self, topic: str) -> str:
        """Redis list carrying the messages of a topic (``RedisQueuePublisher``)."""
        return f"{self.prefix}:queue:{{{_checked('topic', topic)}}}"

    def queue_taken(self, topic: str, owner: str, gen: int) -> str:
        """List of the messages list subscriber ``owner`` took from a topic (generation ``gen``).

        It shares the hash tag of :meth:`queue`, so ``LMOVE`` between them works on a cluster.
        """
        return f"{self.queue(topic)}:taken:{_checked('subscriber id', owner)}:{gen}"

    def queue_end(self, topic: str) -> str:
        """Hash of a list topic's producers, open or ended (hash tag of :meth:`queue`)."""
        return f"{self.queue(topic)}:end"

    def queue_pushed(self, topic: str) -> str:
        """Hash of each producer's last message's CRC-32C on a list topic (tag of :meth:`queue`).

        A resent message whose first push did arrive is not pushed again.
        """
        return f"{self.queue(topic)}:pushed"

    def queue_alive(self, topic: str, producer: str) -> str:
        """Key that lives while ``producer`` beats on a list topic (tag of :meth:`queue`)."""
        return f"{self.queue(topic)}:alive:{_checked('producer id', producer)}"

    def events(self, topic: str) -> str:
        """Redis stream holding the durable events of a topic."""
        return f"{self.prefix}:events:{{{_checked('topic', topic)}}}"

    def events_end(self, topic: str) -> str:
        """Hash of a durable topic's producers, open or ended (hash tag of :meth:`events`)."""
        return f"{self.events(topic)}:end"

    def events_alive(self, topic: str, producer: str) -> str:
        """Key that lives while ``producer`` beats on a durable topic (tag of :meth:`events`)."""
        return f"{self.events(topic)}:alive:{_checked('producer id', producer)}"

    def events_lost(self, topic: str) -> str:
        """Hash of a durable topic's groups: entries each lost to trimming, as reported."""
        return f"{self.events(topic)}:lost"

    def inbox(self, cell: str) -> str:
        """Durable inbox stream of a cell (byte-stream announcements)."""
        return f"{self.prefix}:cell:{{{_checked('cell name', cell)}}}:inbox"

    def receiver(self, cell: str) -> str:
        """Lease of the live cell receiving under a name (string, short TTL)."""
        return f"{self.prefix}:cell:{{{_checked('cell name', cell)}}}:receiver"

    def mailbox(self, cell: str) -> str:
        """Stream of a cell's object-protocol messages (objects, replies, end notices)."""
        return f"{self.prefix}:cell:{{{_checked('cell name', cell)}}}:objects"

    def engine_closed(self, cell: str) -> str:
        """Mark left by a cell's object-protocol engine that shut down (string, TTL)."""
        return f"{self.prefix}:cell:{{{_checked('cell name', cell)}}}:closed"

    def replies(self, cell: str, tx: str) -> str:
        """Stream of the replies to one object-protocol session that ``cell`` sends."""
        return f"{self.mailbox(cell)[: -len(':objects')]}:replies:{_checked('session id', tx)}"

    def xfer_data(self, sid: str) -> str:
        """Redis stream of a transfer's chunk frames."""
        return f"{self._xfer(sid)}:data"

    def xfer_ack(self, sid: str) -> str:
        """Redis stream of a transfer's acknowledgements and control messages."""
        return f"{self._xfer(sid)}:ack"

    def xfer_meta(self, sid: str) -> str:
        """Hash holding a transfer's state (sizes, acknowledged offsets)."""
        return f"{self._xfer(sid)}:meta"

    def parse(self, key: str) -> tuple[str, str, str] | None:
        """Split a key of this schema into ``(kind, name, suffix)``.

        ``"fw:xfer:{7}:meta"`` gives ``("xfer", "7", "meta")`` and ``"fw:obj:{a}"`` gives
        ``("obj", "a", "")``. Returns ``None`` for a key outside the prefix or without a
        hash tag.
        """
        head = f"{self.prefix}:"
        if not key.startswith(head):
            return None
        kind, sep, rest = key[len(head) :].partition(":{")
        name, closed, suffix = rest.partition("}")
        if not (sep and closed and name):
            return None
        return kind, name, suffix.removeprefix(":")

    def _xfer(self, sid: str) -> str:
        return f"{self.prefix}:xfer:{{{_checked('stream id', sid)}}}"

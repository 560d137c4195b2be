"""Appending to durable topics: :class:`RedisStreamPublisher` (see :mod:`.streams`).

Besides the stream, a topic has a *producers* hash (``<stream key>:end``, same hash
tag): each producer's state in the current run, ``open:<run>`` from its first
message and ``end:<run>`` with its last. Its heartbeats, and its messages every second
or so, record the producer again if it is missing (``HSETNX``): a restart without
persistence loses the hash, and a client that reconnects silently does not notice.

Group members end a topic once every producer in it has ended (a member sees only its
share of the events). A producer's first message on a topic whose previous run has
finished (every producer ended, every group caught up, nothing pending) empties the old
run's entries first, so a topic name can be used again: its groups stay and read on.
The emptied run leaves one entry, field ``r`` holding the id of its last entry, so a
group-less reader still inside that run learns that the rest of it is gone.

A producer that sends heartbeats (:meth:`RedisStreamPublisher.watch`) registers as
``open:<run>:live`` and keeps a key of its own alive (``<stream key>:alive:<producer>``,
renewed by its messages and heartbeats, see :mod:`._watched`, and deleted with its last
message): once that key has expired, consumers know the producer stopped without ending
the topic.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Sequence
from typing import Any, Final

from framework._raw import PinnedConnection
from framework.buffers import Segments
from framework.connection import RedisConnection, mapped_errors
from framework.exceptions import BackendError, ConfigurationError
from framework.pubsub._atomic import run_atomic
from framework.pubsub._records import DURABLE
from framework.pubsub._shim import RedisShim
from framework.pubsub._watched import LIVE_SUFFIX, WatchedProducers, finished_run_lua

__all__ = [
    "DEFAULT_MAXLEN",
    "DEFAULT_TTL",
    "FIELD",
    "LIVE_SUFFIX",
    "RESET_FIELD",
    "RedisStreamPublisher",
]

#: Entries a durable topic keeps (approximately); older ones are trimmed.
DEFAULT_MAXLEN: Final = 100_000
#: Safety-net lifetime (s) of a topic's stream and producers hash, refreshed while used.
DEFAULT_TTL: Final = 7 * 24 * 3600.0
#: Field of a stream entry holding the message.
FIELD: Final = b"m"
#: Field of the entry that replaces an emptied run: the id of the run's last entry.
RESET_FIELD: Final = b"r"
#: Longest time (s) between two TTL refreshes of a topic a publisher writes to: a
#: stream that Redis lost and XADD created again (a restart without persistence that
#: the publisher did not notice) is without TTL for at most this long.
REFRESH_EVERY: Final = 10.0

# KEYS[1]: stream, KEYS[2]: producers hash; ARGV: producer, its state, TTL (ms, 0: none),
# prefix of the producers' alive keys.
# Empties a finished run (all producers ended, every group caught up, nothing pending),
# leaving an entry that names the run's last entry (group-less readers cannot be seen).
_REGISTER = (
    finished_run_lua("KEYS[2]")
    + """
if finished and redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local last
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    for i = 1, #group, 2 do
      if group[i] == 'pending' and group[i + 1] ~= 0 then finished = false end
      if group[i] == 'last-delivered-id' and group[i + 1] ~= last then finished = false end
    end
  end
end
if finished then
  redis.call('DEL', KEYS[2])
  if redis.call('EXISTS', KEYS[1]) == 1 then
    local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
    if #top > 0 then redis.call('XADD', KEYS[1], '*', 'r', top[1][1]) end
  end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return finished and 1 or 0
"""
)


#: Entries a resent message is looked for among before it is appended again.
RETRY_WINDOW: Final = 100

# KEYS[1]: stream; ARGV[1]: message, ARGV[2..]: trim arguments. XADD unless one of the
# last entries holds the same message (the failed attempt arrived after all).
_APPEND_ONCE = f"""
for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', {RETRY_WINDOW})) do
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'm' and fields[i + 1] == ARGV[1] then return entry[1] end
  end
end
local args = {{'XADD', KEYS[1]}}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
args[#args + 1] = '*'
args[#args + 1] = 'm'
args[#args + 1] = ARGV[1]
return redis.call(unpack(args))
"""


class RedisStreamPublisher(WatchedProducers, RedisShim):
    """Append messages to per-topic Redis streams (durable topics).

    Args:
        connection: Where to publish; not closed by the publisher (unless built by
            :meth:`from_url`). Oversized inline objects are spilled to a store on it.
        maxlen: Keep about this many entries per topic (``None``: never trim).
        ttl: Expire a topic's stream this long (s) after its last refresh (``None``:
            never). A publisher refreshes it on its first message to a topic, after
            a failure, with a final message, and then every ``REFRESH_EVERY`` seconds
            (or quarter of ``ttl``) that it keeps publishing.

    Attributes:
        connection: The connection in use.
        durable: True: messages stay until trimmed (producers bound the backlog).
        liveness: True: a producer's heartbeats keep a key alive (see :meth:`watch`).
    """

    accepts_segments: Final = True
    durable: Final = True
    liveness: Final = True
    _kind = DURABLE

    def __init__(
        self,
        connection: RedisConnection,
        *,
        maxlen: int | None = DEFAULT_MAXLEN,
        ttl: float | None = DEFAULT_TTL,
    ) -> None:
        if maxlen is not None and (type(maxlen) is not int or maxlen < 1):
            raise ConfigurationError(f"maxlen must be a positive int or None, got {maxlen!r}.")
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self._trim: tuple[Any, ...] = () if maxlen is None else ("MAXLEN", "~", maxlen)
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        self._run = uuid.uuid4().hex[:12]
        self._runs: dict[tuple[str, str], str] = {}  # (topic, producer) -> its run
        self._renew_at: dict[tuple[str, str], float] = {}  # when its messages renew next
        self._registered: set[tuple[str, str]] = set()
        self._refresh_at: dict[str, float] = {}
        self._names: dict[str, tuple[str, str]] = {}
        self._alive_ms: dict[str, int] = {}  # producer -> its alive key's TTL
        self._record_keys: dict[str, bytes] = {}  # producer -> the key signing its records
        # One round trip per message: a connection of its own skips the pool's cost.
        self._pinned = PinnedConnection(connection.once)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStreamPublisher:
        """Connect to ``url`` and return a publisher that owns (and closes) that connection."""
        publisher = cls(RedisConnection.from_url(url), **kwargs)
        publisher._owns_connection = True
        return publisher

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Append ``message`` to the topic's stream, once (no blind retry).

        Raises:
            BackendError: If Redis failed; the entry may or may not have been added
                (consumers drop a resent duplicate by its sequence numbers).
        """
        self.publish(topic, message)

    def publish(
        self,
        topic: str,
        message: bytes | Segments,
        *,
        commands: Sequence[tuple[Any, ...]] = (),
        final: bool = False,
        source: str = "",
        retry: bool = False,
    ) -> None:
        """Run the store's ``commands``, then append ``message``, atomically.

        See :class:`~framework.pubsub.AtomicPublisher`. With ``source``, the producer
        is recorded as open on its first message and as ended with ``final``. With
        ``retry``, the message is appended only if none of the topic's last
        ``RETRY_WINDOW`` entries holds it already (a consumer group would otherwise
        deliver it twice, the second time without its evicted objects).

        Raises:
            BackendError: If Redis failed or refused a write (then nothing was appended
                unless the connection dropped, when the outcome is unknown).
        """
        names = self._names.get(topic)
        if names is None:  # built (and the topic checked) once per topic
            keys = self.connection.keys
            names = self._names[topic] = (keys.events(topic), keys.events_end(topic))
        key, producers = names
        tail: list[tuple[Any, ...]] = []
        register = bool(source) and (topic, source) not in self._registered
        alive_ms = self._alive_ms.get(source) if source else None
        renew = bool(source) and not final and self._renewal_due(topic, source, now=register)
        if register:
            self._start_run(topic, source)
            state = self._open_state(topic, source)
            prefix = self.connection.keys.events_alive(topic, source)[: -len(source)]
            tail.append(("EVAL", _REGISTER, 2, key, producers, source, state, self._ttl_ms, prefix))
        elif renew:
            tail += self._record_again(topic, source)
        if alive_ms and (final or renew):
            alive = self.connection.keys.events_alive(topic, source)
            run = self._run_of(topic, source)
            tail.append(("DEL", alive) if final else ("SET", alive, run, "PX", alive_ms))
        value = self.connection.bulk(message)
        if retry:  # the failed attempt may have arrived: append only if it did not
            tail.append(("EVAL", _APPEND_ONCE, 1, key, value, *self._trim))
        else:
            tail.append(("XADD", key, *self._trim, "*", FIELD, value))
        if final and source:
            tail.append(("HSET", producers, source, self._end_state(topic, source)))
        now = time.monotonic()
        refresh = self._ttl_ms and now >= self._refresh_at.get(topic, 0.0)
        if refresh or (self._ttl_ms and final):
            tail += [("PEXPIRE", key, self._ttl_ms), ("PEXPIRE", producers, self._ttl_ms)]
        try:
            with self._errors(f"append to topic {topic!r}", command="XADD"):
                # A plain message (XADD, TTL refresh) needs no transaction.
                run_atomic(
                    self.connection, commands, tail, atomic=register or final, pinned=self._pinned
                )
        except BackendError:
            # Redis may have restarted: register and refresh the TTL again next time.
            self._registered.discard((topic, source))
            self._refresh_at.pop(topic, None)
            self._renew_next_time(topic, source)
            raise
        if final:  # the next message starts a new run of this producer on the topic
            self._registered.discard((topic, source))
        elif source:
            self._registered.add((topic, source))
        if refresh:
            self._refresh_at[topic] = now + min(REFRESH_EVERY, self._ttl_ms / 4000)

    def _producer_keys(self, topic: str, source: str) -> tuple[str, str]:
        keys = self.connection.keys
        return keys.events_end(topic), keys.events_alive(topic, source)

    def _producers_ttl_ms(self) -> int:
        return self._ttl_ms

    def _release(self) -> None:
        self._pinned.close()

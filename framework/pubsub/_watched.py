"""Heartbeats of watched producers: alive keys, on durable and list topics.

A producer that sends heartbeats is recorded in its topic's producers hash as
``open:<run>:live`` and keeps an alive key of its own; subscribers report it gone once
the key expired (see :mod:`._stream_liveness`). The publishers differ only in where the
keys live and how long the producers hash lives.

A producer's messages renew its alive key and record it again in the hash (should a
restart have lost it), but at most every :data:`RENEW_EVERY` seconds: renewing with
every message cost Redis and the producer two more commands per message.

A producer with a secret (:meth:`WatchedProducers.sign_records`) signs each record it
writes in the hash, so that consumers with the secret act on no forged one (see
:mod:`._records`).
"""

from __future__ import annotations

import abc
import time
import uuid
from typing import Final

from framework.connection import RedisConnection
from framework.pubsub._records import SEPARATOR, record_key, signed_state

__all__ = ["LIVE_SUFFIX", "RENEW_EVERY", "WatchedProducers", "finished_run_lua"]

#: Suffix of the ``open:<run>`` state of a producer that keeps an alive key.
LIVE_SUFFIX: Final = ":live"

#: Longest time (s) between two renewals of a producer's records by its messages; a
#: watched producer renews six times per lifetime of its alive key if that is sooner.
RENEW_EVERY: Final = 1.0

# Sets `finished`: every producer in the hash ended, or stopped beating (its alive key,
# ARGV[4] .. producer, is gone). Part of the publishers' registration scripts. A state
# may carry a MAC after the separator (Redis cannot check it).
_FINISHED_RUN = f"""
local entries = redis.call('HGETALL', PRODUCERS)
local finished = #entries > 0
for i = 1, #entries, 2 do
  local state = string.match(entries[i + 1], '^[^{SEPARATOR}]*')
  if string.sub(state, 1, 4) ~= 'end:' then
    local live = string.sub(state, 1, 5) == 'open:'
      and string.sub(state, -{len(LIVE_SUFFIX)}) == '{LIVE_SUFFIX}'
    if not live or redis.call('EXISTS', ARGV[4] .. entries[i]) == 1 then finished = false end
  end
end
"""


def finished_run_lua(producers: str) -> str:
    """Lua that sets ``finished`` for the producers hash ``producers`` (``KEYS[n]``)."""
    return _FINISHED_RUN.replace("PRODUCERS", producers)


class WatchedProducers(abc.ABC):
    """:meth:`watch` and :meth:`keep_alive` for a publisher (a mixin).

    The publisher sets ``connection``, ``_run`` (its own token), ``_runs`` and
    ``_renew_at`` (empty dicts), ``_alive_ms`` (producer -> TTL of its alive key, in
    ms) and ``_record_keys`` (producer -> the key signing its records; an empty dict),
    names its kind of topic in ``_kind`` and its keys with :meth:`_producer_keys`.
    """

    connection: RedisConnection
    _kind: str
    _run: str
    _runs: dict[tuple[str, str], str]
    _renew_at: dict[tuple[str, str], float]
    _alive_ms: dict[str, int]
    _record_keys: dict[str, bytes]

    @abc.abstractmethod
    def _producer_keys(self, topic: str, source: str) -> tuple[str, str]:
        """The topic's producers hash and ``source``'s alive key."""

    @abc.abstractmethod
    def _producers_ttl_ms(self) -> int:
        """Lifetime (ms) of a producers hash, renewed when written; 0: none."""

    def _start_run(self, topic: str, source: str) -> str:
        """A new run of ``source`` on ``topic``: a token of its own.

        Each run is told apart from the producer's earlier ones on the topic, so a
        subscriber that set a finished run aside does not take the next for it.
        """
        run = self._runs[(topic, source)] = uuid.uuid4().hex[:12]
        return run

    def _run_of(self, topic: str, source: str) -> str:
        """The run ``source`` is in on ``topic`` (the publisher's before its first)."""
        return self._runs.get((topic, source), self._run)

    def _renewal_due(self, topic: str, source: str, *, now: bool = False) -> bool:
        """Whether ``source``'s next message on ``topic`` renews its records.

        Args:
            topic: The topic.
            source: The producer.
            now: Renew now whatever the time (its first message, a failed write).
        """
        key = (topic, source)
        at = time.monotonic()
        if not now and at < self._renew_at.get(key, 0.0):
            return False
        alive_ms = self._alive_ms.get(source)
        self._renew_at[key] = at + min(RENEW_EVERY, alive_ms / 6000 if alive_ms else RENEW_EVERY)
        return True

    def _renew_next_time(self, topic: str, source: str) -> None:
        """The write that renewed may have failed: renew with the next message."""
        self._renew_at.pop((topic, source), None)

    def sign_records(self, source: str, secret: bytes) -> None:
        """Sign producer ``source``'s records in the producers hashes with ``secret``.

        From its next record on, consumers given the same secret can verify them.
        """
        self._record_keys[source] = record_key(secret)

    def _record(self, topic: str, source: str, state: str) -> str:
        """The value recording ``source``'s ``state`` on ``topic`` (signed if it signs)."""
        return signed_state(self._record_keys.get(source), self._kind, topic, source, state)

    def _open_state(self, topic: str, source: str) -> str:
        """``source``'s record in the producers hash while it publishes on ``topic``."""
        live = LIVE_SUFFIX if source in self._alive_ms else ""
        return self._record(topic, source, f"open:{self._run_of(topic, source)}{live}")

    def _end_state(self, topic: str, source: str) -> str:
        """``source``'s record in the producers hash once it ended ``topic``."""
        return self._record(topic, source, f"end:{self._run_of(topic, source)}")

    def _record_again(self, topic: str, source: str) -> list[tuple[object, ...]]:
        """Commands that record ``source`` as open again, should Redis have lost the hash.

        A restart without persistence loses it, and a client that reconnects silently
        does not notice; the hash's lifetime is renewed with it.
        """
        producers, _ = self._producer_keys(topic, source)
        expire = [("PEXPIRE", producers, ttl)] if (ttl := self._producers_ttl_ms()) else []
        return [("HSETNX", producers, source, self._open_state(topic, source)), *expire]

    def watch(self, source: str, ttl: float) -> None:
        """Have subscribers watch producer ``source``: it beats at least every ``ttl`` s.

        From its next first message on a topic, each of its messages and each
        :meth:`keep_alive` keeps its alive key for ``ttl`` seconds.

        Raises:
            ConfigurationError: If ``source`` cannot be part of a key name (``{``, ``}``).
        """
        self._producer_keys("topic", source)  # fails here, not at each heartbeat
        self._alive_ms[source] = max(1, round(ttl * 1000))

    def keep_alive(self, topic: str, source: str, *, closing: bool = False) -> None:
        """One heartbeat of watched producer ``source`` on ``topic``.

        Args:
            topic: A topic ``source`` has published to and not ended.
            source: The producer, as passed to :meth:`watch`.
            closing: The producer stops beating without ending the topic: subscribers
                stop watching it, and wait for its end as for any producer.

        Raises:
            BackendError: If Redis failed.
        """
        producers, alive = self._producer_keys(topic, source)
        what = f"send a heartbeat of {source!r} on topic {topic!r}"
        with self.connection.mapped_errors(what, command="SET"):
            if not closing:
                ms = self._alive_ms[source]
                # PEXPIRE, not SET: Redis out of memory refuses SET, and the producer,
                # alive but unable to write for a while, was counted gone for good.
                pipe = self.connection.once.pipeline(transaction=False)
                pipe.pexpire(alive, ms)
                for command in self._record_again(topic, source):
                    pipe.execute_command(*command)
                if not pipe.execute()[0]:  # gone (Redis restarted, or it lapsed): again
                    self.connection.once.set(alive, self._run_of(topic, source), px=ms)
                return
            pipe = self.connection.once.pipeline(transaction=True)
            pipe.hset(
                producers,
                source,
                self._record(topic, source, f"open:{self._run_of(topic, source)}"),
            )
            if ttl_ms := self._producers_ttl_ms():  # HSET would leave a new hash without
                pipe.pexpire(producers, ttl_ms)
            pipe.delete(alive)
            pipe.execute()

"""What a durable-topic reader learns it can no longer read (see :mod:`.streams`).

Three ways entries of a durable topic disappear before a reader got them, each
reported as a :class:`~framework.exceptions.MessageLossError`:

* trimming (``maxlen``) overtook a consumer group: Redis 7 counts what each group was
  delivered, so once the group has caught up its lag is what trimming took;
* a new run emptied the finished one while a group-less reader was still inside it
  (the run leaves an entry naming its last id, field ``r``);
* the stream was lost (Redis restarted without persistence, expired, deleted) with
  entries a group-less reader had not read: the last entry it read is gone.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions as rex

from framework.connection import RedisConnection
from framework.exceptions import BackendError, MessageLossError
from framework.pubsub._stream_publisher import DEFAULT_TTL, RESET_FIELD
from framework.redis_streams import stream_id, text

logger = logging.getLogger(__name__)

__all__ = ["reset_of", "run_emptied", "trimmed_before_delivery", "vanished"]

# KEYS[1]: stream, KEYS[2]: the groups' trusted read counters (hash: read:<group>, and
# run:<group> the run id of the server that counted); ARGV[1]: group, ARGV[2]: TTL (ms).
# Once the group has caught up, its lag (entries added minus entries delivered, Redis 7)
# counts the entries trimmed before it got them: returns that many and resets the
# counter (XGROUP SETID ... ENTRIESREAD), so each is reported once. The counter is
# trusted only on the server run that recorded it: a reload from disk restores an older
# one. An untrusted counter is reset without a report. 0 when Redis cannot tell.
_TRIMMED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local server = redis.pcall('INFO', 'server')
if type(server) ~= 'string' then return 0 end
local run = string.match(server, 'run_id:(%x+)')
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local added
for i = 1, #info, 2 do
  if info[i] == 'entries-added' then added = info[i + 1] end
end
local read, last = false, false
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name, r, id
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1]
    elseif group[i] == 'entries-read' then r = group[i + 1]
    elseif group[i] == 'last-delivered-id' then id = group[i + 1] end
  end
  if name == ARGV[1] then read, last = r, id end
end
if not read or not last or not added then return 0 end
if #redis.call('XRANGE', KEYS[1], '(' .. last, '+', 'COUNT', 1) > 0 then return 0 end
local trusted = tonumber(redis.call('HGET', KEYS[2], 'read:' .. ARGV[1]) or '-1')
local same = redis.call('HGET', KEYS[2], 'run:' .. ARGV[1]) == run
local lost = 0
if trusted >= 0 and same and read >= trusted then lost = added - read end
if read ~= added then
  local set = redis.pcall('XGROUP', 'SETID', KEYS[1], ARGV[1], last, 'ENTRIESREAD', added)
  if type(set) == 'table' and set.err then return 0 end
end
redis.call('HSET', KEYS[2], 'read:' .. ARGV[1], added, 'run:' .. ARGV[1], run)
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return lost
"""


def trimmed_before_delivery(
    conn: RedisConnection, key: str, topic: str, group: str
) -> MessageLossError | None:
    """Entries of ``key`` trimmed before ``group`` got them, not reported before.

    One member gets them (the script resets the group's counter as it counts), and only
    once the group has caught up; after a restart the counter is reset without a report.

    Raises:
        BackendError: If Redis failed.
    """
    lost_key = conn.keys.events_lost(topic)
    ttl_ms = round(DEFAULT_TTL * 1000)
    try:
        # Both keys named: a WRONGTYPE may come from either.
        what = f"check group {group!r} of {key!r} for trimmed entries (counted in {lost_key!r})"
        with conn.mapped_errors(what):
            lost = int(conn.client.eval(_TRIMMED, 2, key, lost_key, group, ttl_ms))
    except BackendError as exc:
        if not isinstance(exc.__cause__, rex.OutOfMemoryError):
            raise
        # Redis refuses scripts that may write while it is full; the group's consumers
        # must go on reading (and evicting) so memory frees up. The count stays, so the
        # check reports it on a later read.
        logger.debug("Skipped the trimmed-entries check of %s: Redis is full.", key)
        return None
    if lost <= 0:
        return None
    return MessageLossError(
        f"Lost {lost} entr{'y' if lost == 1 else 'ies'} of durable topic {topic!r}: "
        f"trimmed before consumer group {group!r} got them (the topic's maxlen was "
        "reached); raise maxlen.",
        topic=topic,
        count=lost,
    )


def reset_of(fields: dict[bytes, Any]) -> tuple[int, int] | None:
    """The last entry id of the run a reset entry replaced; None if it is not one."""
    try:
        return stream_id(text(fields[RESET_FIELD]))
    except (KeyError, ValueError):  # not a reset entry, or a forged one: foreign
        return None


def run_emptied(topic: str, seen: str, last: tuple[int, int]) -> MessageLossError | None:
    """The loss of a group-less reader at ``seen`` when a run ending at ``last`` was emptied.

    Groups are never inside an emptied run: a run is emptied once every group consumed it.
    """
    if stream_id(seen) >= last:
        return None
    return MessageLossError(
        f"Durable topic {topic!r}: a new run started and emptied the finished one while "
        f"this subscriber was reading it; its entries after {seen} up to "
        f"{last[0]}-{last[1]} were lost.",
        topic=topic,
        possible=True,
    )


def vanished(conn: RedisConnection, key: str, topic: str, seen: str) -> MessageLossError | None:
    """The loss of a group-less reader whose last entry read, ``seen``, is gone.

    Asked when a blocking read found nothing new: ``seen`` is then the newest entry of
    the stream, which trimming keeps; if it is gone, the stream was lost (Redis restarted
    without persistence) or deleted, with whatever the reader had not read yet.

    Raises:
        BackendError: If Redis failed.
    """
    with conn.mapped_errors(f"look for entry {seen} of {key!r}", command="XRANGE"):
        still = conn.client.xrange(key, seen, seen, count=1)
    if still:
        return None
    return MessageLossError(
        f"Durable topic {topic!r} no longer holds entry {seen}, the last one this "
        "subscriber read (Redis restarted without persistence, or the stream expired or "
        "was deleted): entries after it were possibly lost.",
        topic=topic,
        possible=True,
    )

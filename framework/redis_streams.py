"""Redis stream helpers shared by durable topics and cell inboxes: reply shapes, groups.

* :func:`stream_entries` normalizes ``XREAD``/``XREADGROUP`` replies, which are a
  list under RESP2 and a map under RESP3 (redis-py's ``parse_xread_unified``).
* :func:`ensure_group` creates a consumer group (and its stream) once, treating
  ``BUSYGROUP`` as success, and gives a stream it created the caller's TTL, so no
  key is left without one.
* :func:`is_missing_group` recognizes the ``NOGROUP`` error of a read whose group
  (or stream) vanished, e.g. after a Redis restart without persistence.

Errors are mapped once, through :meth:`RedisConnection.mapped_errors`.
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from framework._raw import PinnedConnection, round_trip
from framework.connection import RedisConnection
from framework.exceptions import BackendError

__all__ = [
    "ensure_group",
    "fields_of",
    "group_caught_up",
    "is_missing_group",
    "last_id",
    "read_streams",
    "stream_entries",
    "stream_id",
    "text",
]


def stream_entries(reply: Any) -> list[tuple[bytes, list[Any]]]:
    """Normalize an XREAD/XREADGROUP reply (RESP2 list or RESP3 map) to (key, entries)."""
    if not reply:
        return []
    items = reply.items() if isinstance(reply, dict) else reply
    return [(key, list(entries)) for key, entries in items]


def read_streams(
    client: Any,
    streams: dict[str, str],
    *,
    count: int,
    block: int | None,
    group: tuple[str, str] | None = None,
    pinned: PinnedConnection | None = None,
    timeout: float | None = None,
) -> list[tuple[bytes, list[Any]]]:
    """``XREAD`` (or ``XREADGROUP`` as ``group`` = (group, consumer)), normalized.

    A plain client reads in one raw round trip (no retry, no redis-py reply callbacks:
    a few µs less per read on the consumer's hot path); others (cluster, fakeredis)
    go through redis-py. Entries are ``(id, fields)`` with ``fields`` a dict, or
    ``None`` for a pending entry that was trimmed. With ``pinned`` (a connection of
    ``client``'s pool kept by the caller), the round trip skips the pool. With
    ``timeout``, a plain client waits at most that long (s) for the reply.

    Raises:
        redis.exceptions.RedisError: As the command; callers map it.
    """
    args: list[Any] = ["XREAD"] if group is None else ["XREADGROUP", "GROUP", *group]
    args += ["COUNT", count] + ([] if block is None else ["BLOCK", block])
    command = (*args, "STREAMS", *streams, *streams.values())
    if pinned is None:
        replies = round_trip(client, [command], timeout=timeout)
    else:
        replies = pinned.round_trip([command], timeout)
    if replies is None:
        if group is None:
            reply = client.xread(streams, count=count, block=block)
        else:
            reply = client.xreadgroup(*group, streams, count=count, block=block)
        return stream_entries(reply)
    return [(key, [_entry(e) for e in entries]) for key, entries in stream_entries(replies[0])]


def fields_of(raw: Any) -> dict[bytes, Any]:
    """An entry's fields as a dict, from a flat ``[field, value, ...]`` list, a dict or nil."""
    if raw is None:
        return {}  # a pending entry that was deleted: XREADGROUP gives it no fields
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=False))


def _entry(entry: Any) -> tuple[bytes, dict[bytes, Any] | None]:
    entry_id, fields = entry
    if not fields:
        return entry_id, None
    return entry_id, dict(zip(fields[::2], fields[1::2], strict=True))


def text(value: Any) -> str:
    """A reply value (bytes or str) as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id (``"<ms>-<seq>"``, or ``"<ms>"``) as a pair that orders like Redis.

    Raises:
        ValueError: If it is not an entry id.
    """
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def last_id(conn: RedisConnection, key: str) -> str:
    """The id of the stream's last entry, ``"0"`` when it is empty or absent.

    Raises:
        BackendError: If Redis failed.
    """
    with conn.mapped_errors(f"read the last entry of {key!r}", command="XREVRANGE"):
        last = conn.client.xrevrange(key, count=1)
    return text(last[0][0]) if last else "0"


# KEYS[1]: stream, KEYS[2]: hash of the groups' trusted read counters (read:<group>,
# run:<group>); ARGV: group, start ('0', '$' or an id), TTL (ms) for keys without one.
# Creates the group (and the stream) with a valid read counter (ENTRIESREAD), and
# records it with the server's run id: Redis then counts the entries trimmed before the
# group got them in the group's lag. Returns 1 if created, 0 if the group existed.
_CREATE_COUNTED = """
local read = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local added, length = 0, 0
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = info[i + 1] end
    if info[i] == 'length' then length = info[i + 1] end
  end
  if ARGV[2] == '$' then read = added elseif ARGV[2] == '0' then read = added - length
  else read = false end
end
local args = {'XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM'}
if read then
  args[#args + 1] = 'ENTRIESREAD'
  args[#args + 1] = read
end
local created = redis.pcall(unpack(args))
if type(created) == 'table' and created.err then
  if string.find(tostring(created.err), 'BUSYGROUP', 1, true) then return 0 end
  return created
end
local server = redis.pcall('INFO', 'server')
if read and type(server) == 'string' then
  local run = string.match(server, 'run_id:(%x+)')
  redis.call('HSET', KEYS[2], 'read:' .. ARGV[1], read, 'run:' .. ARGV[1], run)
  if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
end
if tonumber(ARGV[3]) > 0 and redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


def ensure_group(
    conn: RedisConnection,
    key: str,
    group: str,
    *,
    start: str,
    ttl_ms: int | None,
    counted: str | None = None,
) -> bool:
    """Create ``group`` on stream ``key`` at ``start`` (and the stream) unless it exists.

    Args:
        conn: The connection.
        key: The stream.
        group: The consumer group.
        start: First entry id the group delivers after (``"0"``: all, ``"$"``: new).
        ttl_ms: TTL given to the stream if it has none (a stream this call created).
        counted: A hash key (same hash tag as ``key``): give the group a valid read
            counter (Redis 7 ``ENTRIESREAD``) and record it there, so the group's
            ``lag`` counts the entries trimmed before it got them.

    Returns:
        True if the group was created, False if it existed.

    Raises:
        BackendError: If Redis failed.
    """
    with conn.mapped_errors(f"create group {group!r} of {key!r}", command="XGROUP"):
        if counted is not None:
            args = (group, start, ttl_ms or 0)
            return bool(conn.client.eval(_CREATE_COUNTED, 2, key, counted, *args))
        try:
            conn.client.xgroup_create(key, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        if ttl_ms:
            conn.client.pexpire(key, ttl_ms, nx=True)
    return True


def group_caught_up(conn: RedisConnection, key: str, group: str) -> bool:
    """Whether ``group`` has delivered every entry of stream ``key`` and has none pending.

    Raises:
        BackendError: If Redis failed.
    """
    with conn.mapped_errors(f"inspect group {group!r} of {key!r}", command="XINFO"):
        last = conn.client.xinfo_stream(key)["last-generated-id"]
        groups = conn.client.xinfo_groups(key)
    for info in groups:
        if text(info["name"]) == group:
            return bool(info["pending"] == 0 and info["last-delivered-id"] == last)
    return False


def is_missing_group(exc: BackendError) -> bool:
    """Whether a read failed because its consumer group (or stream) does not exist."""
    return "NOGROUP" in str(exc)

"""``framework inspect``: what the framework holds in a Redis, read-only.

It walks the keys under the prefix with ``SCAN`` (on every primary of a cluster) and
reads them with read-only commands only (``XINFO``, ``XLEN``, ``XREVRANGE``, ``HGET``,
``STRLEN``, ``TTL``, ``PUBSUB``, ``TIME``), so it is safe against production and works
for an ACL user limited to ``+@read``.

Anyone may write under the prefix: a key of the wrong type (a string where a stream
belongs), a name that is not a stream id, or contents this build cannot decode make
that one topic, transfer or cell *unreadable* (listed with the keys and the reason),
never the whole command fail. Only errors of the connection or the user (unreachable,
timed out, credentials, a command the ACL denies) end it.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

import click
from rich.table import Column, Table

from framework._keyspace import primaries, scan_keys
from framework.cell.frames import ANNOUNCE_FIELD
from framework.cell.transport import TransferIO
from framework.cli._common import connect, console, require_url, url_option
from framework.cli._text import shown
from framework.connection import RedisConnection
from framework.exceptions import (
    AuthenticationFailed,
    BackendTimeout,
    BackendUnavailable,
    ClosedError,
    FrameworkError,
    PermissionDenied,
)

__all__ = ["collect", "inspect_command"]

#: Inbox entries read per cell to date transfers (newest first).
INBOX_WINDOW = 1000
#: Failures of the connection or of the user's rights, not of one key: they end inspect.
FATAL = (AuthenticationFailed, BackendTimeout, BackendUnavailable, ClosedError, PermissionDenied)

_T = TypeVar("_T")


#: Why a key under the prefix whose name the framework does not write is not shown.
_FOREIGN = "no key of this framework has this name (another program's, under its prefix?)"
#: Foreign keys listed one by one; the others are counted.
FOREIGN_LISTED = 20


class _Unreadable:
    """The things ``inspect`` could not read, each with its keys and why (JSON-ready rows)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, kind: str, name: str, keys: Iterable[str], problem: str) -> None:
        """Record that the ``kind`` named ``name``, held in ``keys``, could not be read."""
        self.rows.append({"kind": kind, "name": name, "keys": sorted(keys), "problem": problem})

    def read(
        self, kind: str, name: str, keys: Iterable[str], reader: Callable[[], _T]
    ) -> _T | None:
        """``reader()``, or None (recorded) when the data under ``keys`` is not readable.

        Raises:
            BackendError: For the :data:`FATAL` kinds, which no other key would escape.
        """
        try:
            return reader()
        except FATAL:
            raise
        except (FrameworkError, ValueError, KeyError, TypeError) as exc:
            # WRONGTYPE, a name no key of this kind can have, undecodable contents.
            self.add(kind, name, keys, f"{type(exc).__name__}: {exc}")
            return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-")[0])


def _classify(conn: RedisConnection, unreadable: _Unreadable) -> dict[str, dict[str, set[str]]]:
    """``{kind: {name: {key, ...}}}`` for every framework key on every primary."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for node in primaries(conn):
        for raw in scan_keys(conn, f"{conn.keys.prefix}:*", node):
            try:
                key = _text(raw)
            except UnicodeDecodeError:  # no key this framework writes: it cannot be named
                shown_key = bytes(raw).decode(errors="backslashreplace")
                unreadable.add("key", shown_key, [shown_key], "the key's name is not UTF-8")
                continue
            parsed = conn.keys.parse(key)
            kind, name = (parsed[0], parsed[1]) if parsed else ("other", key)
            found[kind][name].add(key)
    _list_foreign(sorted(found.get("other", {})), unreadable)
    return found


def _list_foreign(keys: list[str], unreadable: _Unreadable) -> None:
    """List the first :data:`FOREIGN_LISTED` foreign keys, and how many more there are.

    Keys of a framework prefix nested in this one (``fw:demo:...`` under ``fw``) are
    foreign here, and may be many.
    """
    for key in keys[:FOREIGN_LISTED]:
        unreadable.add("key", key, [key], _FOREIGN)
    if len(keys) > FOREIGN_LISTED:
        more = len(keys) - FOREIGN_LISTED
        unreadable.add("key", f"{more} more", [], f"{_FOREIGN}; not listed")


def _server_ms(conn: RedisConnection) -> int:
    with conn.mapped_errors("read the server clock", command="TIME"):
        reply = conn.client.time()
    seconds, micros = next(iter(reply.values())) if isinstance(reply, dict) else reply
    return int(seconds) * 1000 + int(micros) // 1000


def _topics(
    conn: RedisConnection, names: dict[str, set[str]], now: int, unreadable: _Unreadable
) -> list[dict[str, Any]]:
    rows = []
    for topic in sorted(names):
        row = unreadable.read(
            "topic", topic, names[topic], partial(_topic, conn, topic, names, now)
        )
        if row is not None:
            rows.append(row)
    return rows


def _topic(
    conn: RedisConnection, topic: str, names: dict[str, set[str]], now: int
) -> dict[str, Any] | None:
    """The row of durable topic ``topic``; None when only its end marker is left."""
    key = conn.keys.events(topic)
    if key not in names[topic]:
        return None
    with conn.mapped_errors(f"describe topic stream {key!r}", command="XINFO"):
        info = conn.client.xinfo_stream(key)
        groups = conn.client.xinfo_groups(key)
    last = info.get("last-generated-id") or b"0-0"
    return {
        "topic": topic,
        "kind": "durable",
        "entries": int(info["length"]),
        "groups": len(groups),
        "pending": sum(int(g["pending"]) for g in groups),
        "lag": sum(int(g.get("lag") or 0) for g in groups),
        "ended": conn.keys.events_end(topic) in names[topic],
        "age_s": max(0, now - _ms(last)) / 1000 if _ms(last) else None,
    }


def _list_topics(
    conn: RedisConnection, names: dict[str, set[str]], unreadable: _Unreadable
) -> list[dict[str, Any]]:
    rows = []
    for topic in sorted(names):
        row = unreadable.read(
            "list topic", topic, names[topic], partial(_list_topic, conn, topic, names)
        )
        if row is not None:
            rows.append(row)
    return rows


def _list_topic(conn: RedisConnection, topic: str, names: dict[str, set[str]]) -> dict[str, Any]:
    """A list topic's row: messages waiting, and subscribers holding taken keys."""
    key = conn.keys.queue(topic)
    # Owner ids of taken keys (besides them: the producers hash and alive keys).
    taken = {k.rsplit(":", 2)[-2] for k in names[topic] if k.startswith(f"{key}:taken:")}
    with conn.mapped_errors(f"measure list topic {key!r}", command="LLEN"):
        waiting = int(conn.client.llen(key))
    return {"topic": topic, "kind": "list", "entries": waiting, "subscribers": len(taken)}


def _pubsub_topics(conn: RedisConnection) -> list[dict[str, Any]]:
    pattern = conn.keys.topic("*")  # braces are literal in a Redis glob
    with conn.mapped_errors("list pub/sub topics", command="PUBSUB CHANNELS"):
        channels = sorted({_text(c) for c in conn.client.pubsub_channels(pattern)})
        numsub = conn.client.pubsub_numsub(*channels) if channels else []
    counts = {_text(channel): int(n) for channel, n in numsub}
    rows = []
    for channel in channels:
        parsed = conn.keys.parse(channel)
        name = parsed[1] if parsed else channel
        rows.append({"topic": name, "kind": "pub/sub", "subscribers": counts.get(channel, 0)})
    return rows


def _announced_ms(conn: RedisConnection, cells: dict[str, set[str]]) -> dict[int, int]:
    """When each transfer still listed in an inbox was announced (server ms).

    An inbox that cannot be read dates nothing; :func:`_cells` reports it.
    """
    when: dict[int, int] = {}
    for cell in cells:
        entries = _Unreadable().read("cell", cell, cells[cell], partial(_inbox, conn, cell))
        for entry_id, fields in entries or []:
            try:
                sid = int(json.loads(fields[ANNOUNCE_FIELD])["sid"])
            except (KeyError, ValueError, TypeError):
                continue  # not an announcement this build reads; inspect never fails on it
            when.setdefault(sid, _ms(entry_id))
    return when


def _inbox(conn: RedisConnection, cell: str) -> Any:
    key = conn.keys.inbox(cell)
    with conn.mapped_errors(f"read inbox {key!r}", command="XREVRANGE"):
        return conn.client.xrevrange(key, count=INBOX_WINDOW)


def _transfers(
    conn: RedisConnection,
    found: dict[str, dict[str, set[str]]],
    now: int,
    unreadable: _Unreadable,
) -> list[dict[str, Any]]:
    announced = _announced_ms(conn, found.get("cell", {}))
    xfers = found.get("xfer", {})
    rows = []
    for sid in sorted(xfers):
        row = unreadable.read(
            "transfer", sid, xfers[sid], partial(_transfer, conn, sid, announced, now)
        )
        if row is not None:
            rows.append(row)
    return rows


def _transfer(
    conn: RedisConnection, sid: str, announced: dict[int, int], now: int
) -> dict[str, Any] | None:
    """The row of transfer ``sid``; None when its announcement is gone.

    Raises:
        ValueError: If ``sid`` is not a stream id (a key no transfer wrote).
    """
    if not sid.lstrip("-").isdigit():
        raise ValueError(f"{sid!r} is not a stream id")
    io = TransferIO(conn, int(sid), ttl=1.0)  # reads only: the TTL is never applied
    ann = io.load()
    if ann is None:
        return None
    acked = min((io.acked(t).off for t in ann.targets), default=0)
    started = announced.get(ann.sid)
    return {
        "stream_id": ann.sid,
        # Ended transfers (done, cancelled, failed) keep their keys for a while.
        "state": io.ended() or "running",
        "sender": ann.origin,
        "targets": ann.targets,
        "channel": f"{ann.channel}/{ann.topic}",
        "size": ann.size,
        "acknowledged": acked,
        "progress": acked / ann.size if ann.size else None,
        "age_s": (now - started) / 1000 if started else None,
    }


def _cells(
    conn: RedisConnection, cells: dict[str, set[str]], unreadable: _Unreadable
) -> list[dict[str, Any]]:
    rows = []
    for cell in sorted(cells):
        inbox = unreadable.read("cell", cell, cells[cell], partial(_inbox_length, conn, cell))
        if inbox is not None:
            rows.append({"cell": cell, "inbox": inbox})
    return rows


def _inbox_length(conn: RedisConnection, cell: str) -> int:
    key = conn.keys.inbox(cell)
    with conn.mapped_errors(f"measure inbox {key!r}", command="XLEN"):
        return int(conn.client.xlen(key))


def _objects(conn: RedisConnection, objects: dict[str, set[str]]) -> dict[str, int]:
    keys = sorted(key for group in objects.values() for key in group)
    with conn.mapped_errors("measure stored objects", command="TYPE"):
        pipe = conn.client.pipeline(transaction=False)
        for key in keys:
            pipe.type(key)
            pipe.ttl(key)
        replies = pipe.execute()
        kinds = [_text(kind) for kind in replies[0::2]]
        strings = [k for k, kind in zip(keys, kinds, strict=True) if kind == "string"]
        pipe = conn.client.pipeline(transaction=False)
        for key in strings:
            pipe.strlen(key)
        sizes = pipe.execute()
    return {
        "objects": len(objects),
        "keys": len(keys),
        "bytes": sum(int(size) for size in sizes),
        "without_ttl": sum(int(ttl) == -1 for ttl in replies[1::2]),
    }


def collect(conn: RedisConnection) -> dict[str, Any]:
    """Everything ``inspect`` shows, as plain JSON-ready data.

    Data under the prefix that this framework did not write (or cannot decode) does not
    fail it: the topic, transfer or cell it concerns is listed under ``unreadable``,
    with its keys and the reason, and everything else is shown.

    Raises:
        BackendError: If Redis is unreachable, times out, refuses the credentials or
            denies a command (mapped, naming the key).
    """
    unreadable = _Unreadable()
    found = _classify(conn, unreadable)
    now = _server_ms(conn)
    return {
        "redis": conn.url(),
        "prefix": conn.keys.prefix,
        "topics": _topics(conn, found.get("events", {}), now, unreadable)
        + _list_topics(conn, found.get("queue", {}), unreadable)
        + _pubsub_topics(conn),
        "transfers": _transfers(conn, found, now, unreadable),
        "cells": _cells(conn, found.get("cell", {}), unreadable),
        "stored_objects": _objects(conn, found.get("obj", {})),
        "other_keys": sum(len(keys) for keys in found.get("other", {}).values()),
        "unreadable": unreadable.rows,
    }


def _table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    # Names in Redis are chosen by whoever wrote there: never markup, never escapes.
    cells = [[shown(_cell(column, row.get(column))) for column in columns] for row in rows]
    # Long values wrap rather than end in "…", and a stream id (copied from here) is whole.
    table = Table(
        *(
            Column(column, overflow="fold", min_width=_widest(cells, i, column))
            for i, column in enumerate(columns)
        ),
        title=title,
        caption=None if rows else "none",
    )
    for row in cells:
        table.add_row(*row)
    return table


def _widest(cells: list[list[str]], index: int, column: str) -> int | None:
    """The width that keeps every stream id on one line; None for other columns."""
    if column != "stream_id":
        return None
    return max((len(row[index]) for row in cells), default=None)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "stream_id":
        return str(value)  # an id, not a quantity: no thousands separators
    if column == "progress":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


@click.command("inspect")
@url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def inspect_command(url: str | None, as_json: bool) -> None:
    """Show what the framework holds in a Redis: topics, transfers, cells, stored objects.

    Read-only (SCAN and read commands); on a cluster it covers every primary.
    """
    with connect(require_url(url, "inspect")) as conn:
        data = collect(conn)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console.print(f"Redis: {shown(data['redis'])} (prefix {shown(repr(data['prefix']))})")
    topic_columns = ["topic", "kind", "entries", "groups", "pending", "lag", "age_s"]
    console.print(_table("Topics", data["topics"], [*topic_columns, "subscribers"]))
    transfer_columns = ["stream_id", "state", "sender", "targets", "size", "progress", "age_s"]
    console.print(_table("Transfers", data["transfers"], transfer_columns))
    console.print(_table("Cells", data["cells"], ["cell", "inbox"]))
    objects = data["stored_objects"]
    console.print(_table("Stored objects", [objects], list(objects)))
    if data["unreadable"]:  # foreign or damaged data under the prefix: named, not fatal
        title = "Unreadable (not written by this framework, or damaged)"
        console.print(_table(title, data["unreadable"], ["kind", "name", "keys", "problem"]))

"""``framework inspect``: what the framework holds in a Redis, read-only.

It walks the keys under the prefix with ``SCAN`` (on every primary of a cluster) and
reads them with read-only commands only (``XINFO``, ``XLEN``, ``XREVRANGE``, ``HGET``,
``STRLEN``, ``TTL``, ``PUBSUB``, ``TIME``), so it is safe against production and works
for an ACL user limited to ``+@read``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import click
from rich.table import Column, Table

from framework._keyspace import primaries, scan_keys
from framework.cell.frames import ANNOUNCE_FIELD
from framework.cell.transport import TransferIO
from framework.cli._common import connect, console, require_url, url_option
from framework.cli._text import shown
from framework.connection import RedisConnection

__all__ = ["collect", "inspect_command"]

#: Inbox entries read per cell to date transfers (newest first).
INBOX_WINDOW = 1000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-")[0])


def _classify(conn: RedisConnection) -> dict[str, dict[str, set[str]]]:
    """``{kind: {name: {key, ...}}}`` for every framework key on every primary."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for node in primaries(conn):
        for raw in scan_keys(conn, f"{conn.keys.prefix}:*", node):
            key = _text(raw)
            parsed = conn.keys.parse(key)
            kind, name = (parsed[0], parsed[1]) if parsed else ("other", key)
            found[kind][name].add(key)
    return found


def _server_ms(conn: RedisConnection) -> int:
    with conn.mapped_errors("read the server clock", command="TIME"):
        reply = conn.client.time()
    seconds, micros = next(iter(reply.values())) if isinstance(reply, dict) else reply
    return int(seconds) * 1000 + int(micros) // 1000


def _topics(conn: RedisConnection, names: dict[str, set[str]], now: int) -> list[dict[str, Any]]:
    rows = []
    for topic in sorted(names):
        key = conn.keys.events(topic)
        if key not in names[topic]:
            continue  # only the end marker is left
        with conn.mapped_errors(f"describe topic stream {key!r}", command="XINFO"):
            info = conn.client.xinfo_stream(key)
            groups = conn.client.xinfo_groups(key)
        last = info.get("last-generated-id") or b"0-0"
        rows.append(
            {
                "topic": topic,
                "kind": "durable",
                "entries": int(info["length"]),
                "groups": len(groups),
                "pending": sum(int(g["pending"]) for g in groups),
                "lag": sum(int(g.get("lag") or 0) for g in groups),
                "ended": conn.keys.events_end(topic) in names[topic],
                "age_s": max(0, now - _ms(last)) / 1000 if _ms(last) else None,
            }
        )
    return rows


def _list_topics(conn: RedisConnection, names: dict[str, set[str]]) -> list[dict[str, Any]]:
    """List topics: messages waiting, and subscribers holding taken keys."""
    rows = []
    for topic in sorted(names):
        key = conn.keys.queue(topic)
        # Owner ids of taken keys (besides them: the producers hash and alive keys).
        taken = {k.rsplit(":", 2)[-2] for k in names[topic] if k.startswith(f"{key}:taken:")}
        with conn.mapped_errors(f"measure list topic {key!r}", command="LLEN"):
            waiting = int(conn.client.llen(key))
        rows.append({"topic": topic, "kind": "list", "entries": waiting, "subscribers": len(taken)})
    return rows


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
    """When each transfer still listed in an inbox was announced (server ms)."""
    when: dict[int, int] = {}
    for cell in cells:
        key = conn.keys.inbox(cell)
        with conn.mapped_errors(f"read inbox {key!r}", command="XREVRANGE"):
            entries = conn.client.xrevrange(key, count=INBOX_WINDOW)
        for entry_id, fields in entries:
            try:
                sid = int(json.loads(fields[ANNOUNCE_FIELD])["sid"])
            except (KeyError, ValueError, TypeError):
                continue  # not an announcement this build reads; inspect never fails on it
            when.setdefault(sid, _ms(entry_id))
    return when


def _transfers(
    conn: RedisConnection, found: dict[str, dict[str, set[str]]], now: int
) -> list[dict[str, Any]]:
    announced = _announced_ms(conn, found.get("cell", {}))
    rows = []
    for sid in sorted(found.get("xfer", {})):
        io = TransferIO(conn, int(sid), ttl=1.0)  # reads only: the TTL is never applied
        ann = io.load()
        if ann is None:
            continue
        acked = min((io.acked(t).off for t in ann.targets), default=0)
        started = announced.get(ann.sid)
        rows.append(
            {
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
        )
    return rows


def _cells(conn: RedisConnection, cells: dict[str, set[str]]) -> list[dict[str, Any]]:
    rows = []
    for cell in sorted(cells):
        key = conn.keys.inbox(cell)
        with conn.mapped_errors(f"measure inbox {key!r}", command="XLEN"):
            rows.append({"cell": cell, "inbox": int(conn.client.xlen(key))})
    return rows


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

    Raises:
        BackendError: If Redis fails or denies a read (mapped, naming the key).
    """
    found = _classify(conn)
    now = _server_ms(conn)
    return {
        "redis": conn.url(),
        "prefix": conn.keys.prefix,
        "topics": _topics(conn, found.get("events", {}), now)
        + _list_topics(conn, found.get("queue", {}))
        + _pubsub_topics(conn),
        "transfers": _transfers(conn, found, now),
        "cells": _cells(conn, found.get("cell", {})),
        "stored_objects": _objects(conn, found.get("obj", {})),
        "other_keys": sum(len(keys) for keys in found.get("other", {}).values()),
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

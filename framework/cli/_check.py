"""``framework check``: connectivity and one timed round trip of a few-MB object."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import click
from rich.table import Table

from framework.cli._common import FiniteFloat, connect, console, url_option
from framework.cli._text import shown
from framework.connection import RedisConnection
from framework.exceptions import FrameworkError
from framework.serialize import dumps, loads

logger = logging.getLogger("framework.cli")

__all__ = ["check"]

MB = 1 << 20
#: TTL of the check's key: a safety net should the command die between SET and DEL.
CHECK_TTL_MS = 60_000


def check_object(nbytes: int) -> dict[str, Any]:
    """The round-tripped object: ``nbytes`` of random bytes plus nested, non-ASCII data."""
    return {
        "name": "framework check",
        "blob": os.urandom(nbytes),
        "nested": {
            "text": "héllo → wörld ✓",
            "numbers": list(range(100)),
            "floats": [0.1, 2.5, float("inf")],
            "mixed": (1, None, True, b"", frozenset({"a", "b"})),
        },
    }


def _delete_quietly(conn: RedisConnection, key: str) -> None:
    """Delete the check key after a failure; a failure of this is logged (it has a TTL)."""
    try:
        with conn.mapped_errors(f"delete the check key {key!r}", command="DEL"):
            conn.client.delete(key)
    except FrameworkError as exc:
        logger.debug("The check key %r stays until its TTL: %s", key, exc)


def _round_trip(conn: RedisConnection, obj: Any) -> list[tuple[str, float, int]]:
    """Serialize, SET, GET, deserialize and compare; returns (step, seconds, bytes) rows."""
    key = conn.keys.obj(f"check-{uuid.uuid4().hex}")
    rows: list[tuple[str, float, int]] = []
    started = time.perf_counter()
    frame = dumps(obj)
    rows.append(("serialize (dumps)", _lap(started), frame.nbytes))
    try:
        started = time.perf_counter()
        with conn.mapped_errors(f"write the check object to {key!r}", command="SET"):
            conn.client.set(key, conn.bulk(frame), px=CHECK_TTL_MS)
        rows.append(("write (SET)", _lap(started), frame.nbytes))
        started = time.perf_counter()
        with conn.mapped_errors(f"read the check object back from {key!r}", command="GET"):
            data = conn.client.get(key)
        rows.append(("read (GET)", _lap(started), len(data or b"")))
    except BaseException:
        _delete_quietly(conn, key)  # the error that stopped the check is the one to show
        raise
    with conn.mapped_errors(f"delete the check key {key!r}", command="DEL"):
        conn.client.delete(key)
    if data is None:
        raise click.ClickException(f"Key {key!r} vanished between SET and GET.")
    started = time.perf_counter()
    back = loads(data)
    rows.append(("deserialize (loads)", _lap(started), len(data)))
    if back != obj:
        raise click.ClickException("The object read back differs from the one written.")
    return rows


def _lap(started: float) -> float:
    return time.perf_counter() - started


@click.command()
@url_option
@click.option(
    "--size-mb",
    type=FiniteFloat(min=0, max=4096),
    default=4.0,
    show_default=True,
    help="Size of the object's bytes payload.",
)
def check(url: str | None, size_mb: float) -> None:
    """Check connectivity: round-trip one object through Redis and time each step.

    Serializes a dict (random bytes plus nested data), stores it with SET, reads it
    back with GET, deserializes it and checks that it equals the original. Without a
    URL, a throw-away server is started.
    """
    started = time.perf_counter()
    obj = check_object(int(size_mb * MB))
    with connect(url, embedded_ok=True) as conn:
        console.print(f"Redis: {shown(conn.url())}")
        rows = _round_trip(conn, obj)
    table = Table("step", "ms", "MB", "MB/s", title=f"Round trip of a {size_mb:g} MB object")
    for step, seconds, nbytes in rows:
        rate = nbytes / 1e6 / seconds if seconds > 0 else 0.0
        table.add_row(step, f"{seconds * 1000:.2f}", f"{nbytes / 1e6:.2f}", f"{rate:,.0f}")
    console.print(table)
    total = time.perf_counter() - started
    console.print(f"OK: the object came back equal; {total * 1000:.0f} ms in total.")

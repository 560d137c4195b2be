"""Command line: ``python -m framework <command>`` (``framework <command>`` when installed).

Every command that talks to Redis takes ``--url`` (default: the
``FRAMEWORK_REDIS_URL`` environment variable). Without either it starts a
throw-away server with :class:`~framework.embedded.EmbeddedRedis`, so the demo
works on a machine with no Redis configured. Framework errors end the command
with exit status 1 and a one-line message instead of a traceback.

Commands:
    demo: The main job end to end: an object stream and a byte stream across processes.
    check: Round-trip one object of a few MB through Redis and time each step.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import click

from framework import __version__
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import FrameworkError
from framework.serialize import dumps, loads

__all__ = ["main"]

MB = 1 << 20
#: TTL of the demo's key: a safety net should the demo die between SET and DEL.
DEMO_TTL_MS = 60_000

F = TypeVar("F", bound=Callable[..., Any])


def url_option(command: F) -> F:
    """The ``--url`` option shared by every command that talks to Redis."""
    return click.option(
        "--url",
        envvar="FRAMEWORK_REDIS_URL",
        show_envvar=True,
        default=None,
        help="Redis URL (redis://, rediss://, unix://, redis+cluster://). "
        "Default: start a throw-away local server.",
    )(command)


@contextmanager
def framework_errors() -> Iterator[None]:
    """Turn framework errors into click's clean ``Error: ...`` exit with status 1."""
    try:
        yield
    except FrameworkError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc


@contextmanager
def redis_connection(url: str | None) -> Iterator[RedisConnection]:
    """A checked connection to ``url``, or to a throw-away server when ``url`` is empty.

    Args:
        url: Where Redis is; empty or None starts an :class:`EmbeddedRedis`.

    Yields:
        A connection that answered PING; it (and any server started) is closed afterwards.

    Raises:
        ConfigurationError: If the URL is invalid or no server can be started.
        BackendUnavailable: If Redis does not answer.
    """
    with ExitStack() as stack:
        if url:
            conn = stack.enter_context(RedisConnection.from_url(url))
        else:
            server = stack.enter_context(EmbeddedRedis())
            kind = "fakeredis (redis-server not found)" if server.is_fake else "redis-server"
            click.echo(f"Started a throw-away {kind} at {server.url}.")
            conn = stack.enter_context(server.connection())
        conn.ping()
        yield conn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="framework")
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or everything (-vv).")
def main(verbose: int) -> None:
    """Move Python objects and byte streams between processes through Redis."""
    if verbose:
        level = logging.INFO if verbose == 1 else logging.DEBUG
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def demo_object(nbytes: int) -> dict[str, Any]:
    """The demo's payload: ``nbytes`` of random bytes plus nested, non-ASCII data."""
    return {
        "name": "framework demo",
        "blob": os.urandom(nbytes),
        "nested": {
            "text": "héllo → wörld ✓",
            "numbers": list(range(100)),
            "floats": [0.1, 2.5, float("inf")],
            "mixed": (1, None, True, b"", frozenset({"a", "b"})),
        },
    }


def _round_trip(conn: RedisConnection, obj: Any) -> list[tuple[str, float, str]]:
    """Serialize, SET, GET, deserialize and compare; returns (step, seconds, detail) rows."""
    key = conn.keys.obj(f"demo-{uuid.uuid4().hex}")
    rows: list[tuple[str, float, str]] = []
    started = time.perf_counter()
    frame = dumps(obj)
    rows.append(("serialize (dumps)", _lap(started), f"{len(frame.parts)} part(s)"))
    try:
        started = time.perf_counter()
        with conn.mapped_errors(f"write the demo object to {key!r}", command="SET"):
            conn.client.set(key, conn.bulk(frame), px=DEMO_TTL_MS)
        rows.append(("write (SET)", _lap(started), _rate(frame.nbytes, started)))
        started = time.perf_counter()
        with conn.mapped_errors(f"read the demo object back from {key!r}", command="GET"):
            data = conn.client.get(key)
        rows.append(("read (GET)", _lap(started), _rate(len(data or b""), started)))
    finally:
        with conn.mapped_errors(f"delete the demo key {key!r}", command="DEL"):
            conn.client.delete(key)
    if data is None:
        raise click.ClickException(f"Key {key!r} vanished between SET and GET.")
    started = time.perf_counter()
    back = loads(data)
    rows.append(("deserialize (loads)", _lap(started), ""))
    if back != obj:
        raise click.ClickException("The object read back differs from the one written.")
    return rows


def _lap(started: float) -> float:
    return time.perf_counter() - started


def _rate(nbytes: int, started: float) -> str:
    return f"{nbytes / MB / max(_lap(started), 1e-9):,.0f} MB/s"


@main.command()
@url_option
@click.option(
    "--records",
    type=click.IntRange(min=0),
    default=2000,
    show_default=True,
    help="Small records sent inline on the object stream.",
)
@click.option(
    "--blobs",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Large binary objects sent through the store.",
)
@click.option(
    "--blob-mb",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="MB per large object; the byte-stream blob is 4x this.",
)
def demo(url: str | None, records: int, blobs: int, blob_mb: int) -> None:
    """Run the main job: an object stream and a byte stream between two processes.

    A producer streams records and large objects on a durable topic to a consumer
    in another process; then a cell sends a blob to a cell in another process.
    Both sides' digests are compared. Without --url, an embedded Redis is started.
    """
    from framework.demo import run_demo  # the demo imports every layer; keep `check` light

    with framework_errors():
        run_demo(url, records=records, blobs=blobs, blob_mb=blob_mb, echo=click.echo)
    click.echo("OK: everything sent arrived intact.")


@main.command()
@url_option
@click.option(
    "--size-mb",
    type=click.FloatRange(min=0),
    default=4.0,
    show_default=True,
    help="Size of the object's bytes payload.",
)
def check(url: str | None, size_mb: float) -> None:
    """Round-trip a few-MB object through Redis and time each step.

    Serializes a dict (random bytes plus nested data) with framework.serialize,
    stores it with SET, reads it back with GET, deserializes it and checks that
    it equals the original.
    """
    started = time.perf_counter()
    obj = demo_object(int(size_mb * MB))
    with framework_errors(), redis_connection(url) as conn:
        click.echo(f"Redis: {conn.url()}")
        click.echo(f"Object: a dict holding {size_mb:g} MB of bytes and nested data.")
        rows = _round_trip(conn, obj)
    for step, seconds, detail in rows:
        click.echo(f"  {step:<20} {seconds * 1000:9.2f} ms  {detail}".rstrip())
    total = time.perf_counter() - started
    click.echo(f"OK: the object came back equal; {total * 1000:.0f} ms in total.")

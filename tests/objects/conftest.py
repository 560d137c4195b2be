"""Fixtures of the object-protocol tests: engines (with their cells) closed after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from framework.cell import StreamCell
from framework.connection import RedisConnection
from framework.objects import EngineConfig, RedisStreamableEngine
from tests.cell.helpers import SMALL
from tests.objects.helpers import RecordingFactory

EngineFactory = Callable[..., RedisStreamableEngine]


@pytest.fixture
def make_engine() -> Iterator[EngineFactory]:
    """``make_engine(conn, name, cell_key=None, **engine_kw)``: an engine over a new cell.

    Engines are shut down, then their cells closed, after the test.
    """
    made: list[tuple[RedisStreamableEngine, StreamCell]] = []

    def make(
        conn: RedisConnection, name: str, cell_key: bytes | None = None, **kw: Any
    ) -> RedisStreamableEngine:
        cell = StreamCell(conn, name, config=SMALL, key=cell_key)
        kw.setdefault("config", EngineConfig(inline_limit=64 * 1024, close_timeout=5))
        engine = RedisStreamableEngine(cell, **kw)
        made.append((engine, cell))
        return engine

    yield make
    for engine, cell in reversed(made):
        engine.shutdown_streamer()
        cell.close()


def server_and_site(
    make_engine: EngineFactory, conn: RedisConnection, **site_kw: Any
) -> tuple[RedisStreamableEngine, RecordingFactory]:
    """A sending engine ``server``, and an engine ``site`` consuming c/t with a factory."""
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site", **site_kw).register_stream_processing("c", "t", factory)
    return server, factory

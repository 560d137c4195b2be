"""Fixtures of the byte-stream tests: a cell factory that closes what it made."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from framework.cell import CellConfig, StreamCell
from framework.connection import RedisConnection
from tests.cell.helpers import SMALL

CellFactory = Callable[..., StreamCell]


@pytest.fixture
def make_cell() -> Iterator[Callable[..., StreamCell]]:
    """``make_cell(conn, name, config=SMALL, **kw)``; every cell is closed after the test."""
    cells: list[StreamCell] = []

    def make(conn: RedisConnection, name: str, config: CellConfig = SMALL, **kw: Any) -> StreamCell:
        cell = StreamCell(conn, name, config=config, **kw)
        cells.append(cell)
        return cell

    yield make
    for cell in reversed(cells):
        cell.close()


_REAL = pytest.param("real", id="real", marks=pytest.mark.integration)
_CLUSTER = pytest.param(
    "cluster", id="cluster", marks=[pytest.mark.integration, pytest.mark.cluster]
)


@pytest.fixture(params=[pytest.param("fake", id="fake"), _REAL, _CLUSTER])
def conn(request: pytest.FixtureRequest) -> RedisConnection:
    """Every byte-stream test runs on fakeredis, a real redis-server and a local cluster."""
    result: RedisConnection = request.getfixturevalue(f"{request.param}_conn")
    return result

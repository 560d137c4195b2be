"""The README's "Write your own store" example, verbatim, run through the store contract."""

from __future__ import annotations

# --- example: sqlite_store.py ---
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from framework.buffers import Segments
from framework.store import BaseStore


class SqliteStore(BaseStore):
    """Objects as rows of one SQLite table, shared by every process that opens the file."""

    kind = "sqlite"  # the entry-point name that registers this class

    def __init__(self, name: str = "sqlite", *, path: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)  # serializer=, secret=, ttl=
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()  # one connection, shared by this process's threads
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS objects"
            " (key TEXT PRIMARY KEY, value BLOB, expires REAL, readers INTEGER)"
        )

    def _options(self) -> dict[str, Any]:
        return {"path": self.path}  # plain JSON that rebuilds the store; never a secret

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # also locks out other processes' writes
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write(
        self, frames: Sequence[Segments], *, ttl: float | None, readers: int | None
    ) -> list[str]:
        now = time.time()
        rows = [(uuid.uuid4().hex, f.join(), ttl and now + ttl, readers) for f in frames]
        with self._transaction() as db:
            db.execute("DELETE FROM objects WHERE expires <= ?", (now,))  # purge expired
            db.executemany("INSERT INTO objects VALUES (?, ?, ?, ?)", rows)
        return [row[0] for row in rows]

    def _read(self, keys: Sequence[str], *, evict: bool) -> list[bytes | None]:
        with self._transaction() as db:  # read-and-count (or delete) atomically
            return [self._take(db, key, evict) for key in keys]

    def _take(self, db: sqlite3.Connection, key: str, evict: bool) -> bytes | None:
        row = db.execute(
            "SELECT value, readers FROM objects WHERE key = ? AND (expires IS NULL OR expires > ?)",
            (key, time.time()),
        ).fetchone()
        if row is None:
            return None
        if evict or row[1] == 1:
            db.execute("DELETE FROM objects WHERE key = ?", (key,))
        elif row[1] is not None:
            db.execute("UPDATE objects SET readers = readers - 1 WHERE key = ?", (key,))
        return bytes(row[0])

    def _exists(self, key: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM objects WHERE key = ? AND (expires IS NULL OR expires > ?)",
                (key, time.time()),
            ).fetchone()
        return row is not None

    def _delete(self, key: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM objects WHERE key = ?", (key,))

    def _close(self) -> None:
        self._db.close()


# --- end of example ---

import pickle  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from framework.store import (  # noqa: E402
    extract,
    register_store_kind,
    registered_stores,
    unregister_store,
    unregister_store_kind,
)
from framework.testing import StoreContractTests  # noqa: E402


class TestSqliteStore(StoreContractTests):
    """The README example meets the same contract as the built-in stores."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteStore]:
        with SqliteStore("example", path=str(tmp_path / "objects.db")) as store:
            yield store


def test_a_pickled_proxy_rebuilds_the_example_store(tmp_path: Path) -> None:
    register_store_kind("sqlite", SqliteStore)  # what the entry point does in a real install
    try:
        with SqliteStore("producer", path=str(tmp_path / "shared.db"), ttl=60) as producer:
            data = pickle.dumps(producer.proxy({"from": "sqlite"}, evict=True))
        copy = pickle.loads(data)  # a consumer: only key + config arrive
        assert extract(copy) == {"from": "sqlite"}
        (rebuilt,) = [s for s in registered_stores() if isinstance(s, SqliteStore)]
        assert rebuilt.config().options["path"] == str(tmp_path / "shared.db")
        unregister_store(rebuilt)
        rebuilt.close()
    finally:
        unregister_store_kind("sqlite")

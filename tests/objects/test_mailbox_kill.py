"""Mailbox readers ride out a CLIENT KILL of the very connection they are blocked on.

Each test kills the reader's own connection while Redis shows it blocked in its read, and
goes on only once the reader logged that it reconnects, so the kill hit a read on every run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.objects.mailbox import Mailbox, MailEntry, post
from tests.cell.helpers import blocked_in

pytestmark = pytest.mark.integration

_RECONNECTING = "dropped the connection while reading mailbox"


class Reading:
    """A thread that repeats ``read`` until it returns entries, keeping them or its error."""

    def __init__(self, read: Callable[[], list[MailEntry] | None]) -> None:
        self.entries: list[MailEntry] = []
        self.error: BaseException | None = None
        self._read = read
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.entries:
                self.entries = self._read() or []
        except BaseException as exc:  # handed to the test, which fails on it
            self.error = exc

    def result(self) -> list[MailEntry]:
        self.thread.join(20)
        assert not self.thread.is_alive(), "the reader never returned"
        assert self.error is None, f"the read raised instead of reconnecting: {self.error!r}"
        return self.entries


@pytest.fixture
def reader_conn(
    redis_server: EmbeddedRedis, real_conn: RedisConnection, caplog: pytest.LogCaptureFixture
) -> Iterator[Any]:
    """The reader's own connection, apart from the test's (which kills it)."""
    caplog.set_level(logging.INFO, logger="framework.cell.reconnect")
    with RedisConnection.from_url(redis_server.url) as conn:
        yield conn


def mailbox(conn: RedisConnection, key: str) -> Mailbox:
    """A created mailbox whose reads ride out dropped connections for up to 10 s."""
    box = Mailbox(conn, key, ttl=60, patience=10, stop=threading.Event())
    box.create()
    return box


def kill_blocked_read(
    admin: RedisConnection,
    victim: RedisConnection,
    command: str,
    reading: Reading,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kill ``victim``'s connection blocked in ``command`` until the reader reconnects."""
    deadline = time.monotonic() + 20
    while not any(_RECONNECTING in r.getMessage() for r in caplog.records):
        assert reading.error is None, f"the read raised instead of reconnecting: {reading.error!r}"
        assert time.monotonic() < deadline, f"the reader was never killed blocked in {command}"
        for addr in blocked_in(admin.client, victim, command):
            admin.client.client_kill(addr)
        time.sleep(0.01)


def test_a_reply_reader_killed_mid_read_writes_once_and_reads_on(
    real_conn: RedisConnection, reader_conn: RedisConnection, caplog: pytest.LogCaptureFixture
) -> None:
    other = mailbox(real_conn, "fw:test:other")
    box = mailbox(reader_conn, "fw:test:replies")
    writes = [(other.key, {b"n": b"1"})]

    def read() -> list[MailEntry] | None:
        written, entries = box.read_after(writes)  # the object goes out with the read
        assert written == [True]
        return entries

    reading = Reading(read)
    kill_blocked_read(real_conn, reader_conn, "xread", reading, caplog)
    post(real_conn, [box.key], {b"reply": b"r1"})
    assert [fields for _, fields in reading.result()] == [{b"reply": b"r1"}]
    # Every attempt wrote the object (a repeat is harmless: the receiver dedups by seq).
    assert real_conn.client.xlen(other.key) >= 1


def test_a_group_reader_killed_mid_read_reads_its_pending_entry_once(
    real_conn: RedisConnection, reader_conn: RedisConnection, caplog: pytest.LogCaptureFixture
) -> None:
    box = mailbox(reader_conn, "fw:test:mailbox")
    reader = box.reader("site-0")
    # An earlier read of this reader whose reply was lost on a dropped connection:
    # Redis delivered the entry to it, the reader never saw it.
    post(real_conn, [box.key], {b"object": b"o1"})
    real_conn.client.xreadgroup("engine", "site-0", {box.key: ">"}, count=1)

    reading = Reading(reader.read)
    kill_blocked_read(real_conn, reader_conn, "xreadgroup", reading, caplog)
    ((_, fields),) = reading.result()
    assert fields == {b"object": b"o1"}
    assert reader.read(block_ms=1) == []  # handled: not read again; quiet, so released
    assert reader.read(block_ms=1) == []
    assert real_conn.client.xpending(box.key, "engine")["pending"] == 0
    assert real_conn.client.xrange(box.key) == []

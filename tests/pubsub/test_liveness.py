"""After a restart, which producers a subscriber waits for before it trusts a topic's end."""

from __future__ import annotations

import pytest

from framework.connection import RedisConnection
from framework.pubsub import _stream_liveness
from framework.pubsub._stream_liveness import Liveness

OPEN_AB = {b"A": b"open:r1", b"B": b"open:r2", b"C": b"end:r3"}


def test_a_topic_is_trusted_once_every_producer_seen_open_is_recorded_again(
    fake_conn: RedisConnection,
) -> None:
    liveness = Liveness(fake_conn)
    liveness.seen("t", OPEN_AB)
    liveness.restarted()
    assert not liveness.trusts("t", {b"A": b"end:r1"})  # B not recorded again yet
    assert liveness.trusts("t", {b"A": b"end:r1", b"B": b"open:r2"})  # C had ended


def test_a_topic_not_read_before_the_restart_waits_out_the_grace(
    fake_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    liveness = Liveness(fake_conn)
    liveness.seen("t", {})  # read empty: perhaps already after the restart
    liveness.restarted()
    assert not liveness.trusts("t", {b"A": b"end:r1"})
    assert not liveness.trusts("other", {b"A": b"end:r1"})
    monkeypatch.setattr(_stream_liveness, "RESTART_GRACE_S", 0.0)
    liveness.restarted()
    assert liveness.trusts("t", {b"A": b"end:r1"})


def test_the_same_restart_noticed_twice_keeps_what_was_awaited(
    fake_conn: RedisConnection,
) -> None:
    """A member that learns of a restart from the run id, then finds its group gone."""
    liveness = Liveness(fake_conn)
    liveness.seen("t", OPEN_AB)
    liveness.restarted()
    liveness.seen("t", {b"A": b"open:r1"})  # read from the emptied server
    liveness.seen("u", {b"X": b"end:r9"})
    liveness.restarted()
    assert not liveness.trusts("t", {b"A": b"end:r1"})  # before: B was forgotten
    assert not liveness.trusts("u", {b"X": b"end:r9"})  # unknown before: the grace

"""A pub/sub subscription whose connection goes silent is probed, given up and renewed.

Before, a subscriber whose connection was cut without being closed (a hung server, a
partition, a NAT that dropped it) read nothing forever, and what was published from
then on was lost in silence.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import MessageLossError, ReceiveTimeout
from framework.pubsub import RedisPublisher, RedisSubscriber
from framework.pubsub._probe import PROBE_AFTER_S, Probe
from tests.pubsub._blackhole import Blackhole

# -- the rule ----------------------------------------------------------------------------------


def test_a_silent_connection_is_probed_then_given_up_if_the_probe_goes_unanswered() -> None:
    probe = Probe(timeout=2.0, now=100.0)
    assert not probe.due(100.0 + PROBE_AFTER_S / 2)
    assert probe.due(100.0 + PROBE_AFTER_S)
    probe.sent(101.0)
    assert not probe.due(102.0)  # one probe at a time
    assert not probe.dead(103.0)
    assert probe.dead(103.5)


def test_anything_heard_answers_the_probe() -> None:
    probe = Probe(timeout=2.0, now=0.0)
    probe.sent(1.0)
    probe.heard(2.5)  # a message, or the PING's reply
    assert not probe.dead(10.0)
    assert not probe.due(2.5 + PROBE_AFTER_S / 2)
    assert probe.due(2.5 + PROBE_AFTER_S)


def test_observing_reads_pings_once_when_due_and_tells_a_dead_connection() -> None:
    probe, pings = Probe(timeout=2.0, now=0.0), []
    ping = lambda: pings.append(1)  # noqa: E731
    assert not probe.observe(False, ping, now=PROBE_AFTER_S / 2)
    assert pings == []
    assert not probe.observe(False, ping, now=PROBE_AFTER_S)
    assert not probe.observe(False, ping, now=PROBE_AFTER_S + 1)
    assert pings == [1]
    assert probe.observe(False, ping, now=PROBE_AFTER_S + 2.5)
    assert "no answer to a PING within 2.0 s" in probe.failure
    # Starts afresh for the connection that replaces it.
    assert not probe.observe(False, ping, now=PROBE_AFTER_S + 3)
    assert not probe.observe(True, ping, now=PROBE_AFTER_S + 10)
    assert pings == [1]


# -- on a real server, through a path that can be cut silently -------------------------------


@pytest.fixture
def hole(redis_server: EmbeddedRedis) -> Iterator[Blackhole]:
    with Blackhole(redis_server.ports[0]) as proxy:
        yield proxy


@pytest.mark.parametrize("sharded", [False, True], ids=["subscribe", "ssubscribe"])
def test_a_subscription_cut_silently_is_renewed_and_its_loss_reported(
    redis_url: str, hole: Blackhole, sharded: bool
) -> None:
    cut_url = f"redis://127.0.0.1:{hole.port}/0?socket_timeout=1"
    with RedisConnection.from_url(cut_url) as cut, RedisConnection.from_url(redis_url) as direct:
        subscriber = RedisSubscriber(cut, "t", timeout=10, sharded=sharded)
        publisher = RedisPublisher(direct, sharded=sharded)
        publisher.send_message("t", b"before")
        assert subscriber.next_message() == b"before"
        hole.swallow()
        publisher.send_message("t", b"lost")
        # Before: ReceiveTimeout after 10 s, and "lost" gone without a word.
        with pytest.raises(MessageLossError, match="interrupted"):
            subscriber.next_message()
        assert subscriber.listening_since is not None  # subscribed again
        publisher.send_message("t", b"after")
        assert subscriber.next_message() == b"after"
        subscriber.close()
        publisher.close()


def test_an_idle_live_subscription_is_never_given_up(redis_url: str, hole: Blackhole) -> None:
    cut_url = f"redis://127.0.0.1:{hole.port}/0?socket_timeout=0.5"
    with RedisConnection.from_url(cut_url) as conn, RedisPublisher(conn) as publisher:
        subscriber = RedisSubscriber(conn, "t", timeout=4 * PROBE_AFTER_S + 2)
        with pytest.raises(ReceiveTimeout):  # probed and answered: silence, no loss
            subscriber.next_message(timeout=4 * PROBE_AFTER_S)
        publisher.send_message("t", b"x")
        assert subscriber.next_message() == b"x"
        subscriber.close()

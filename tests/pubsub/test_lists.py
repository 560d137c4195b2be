"""List topics: a pop whose reply is lost loses nothing, and nothing taken is left behind.

The faults are real: a proxy between the subscriber and Redis (real, or fakeredis served
over TCP) lets the pop run in Redis and closes the connection instead of forwarding its
reply. A plain ``BLPOP`` loses that message.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from framework.connection import RedisConnection
from framework.exceptions import BackendError, MessageLossError
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber
from framework.pubsub._taker import TAKEN_TTL_S
from framework.pubsub._taking import TRIM_EVERY, Pop, Taking
from framework.stream import StreamConsumer, StreamProducer
from tests.proxies import ReplyDropper
from tests.stream.faults import RedisProcess

TOPIC = "jobs"
#: The blocking pops of this subscriber and of ProxyStore's.
BLOCKING_POPS = (b"BLMOVE", b"BLPOP")
#: Their non-blocking forms.
POLLS = (b"\r\nLMOVE\r\n", b"\r\nLPOP\r\n")
#: Every pop, blocking or not.
POPS = (b"LMOVE\r\n", b"LPOP\r\n")


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest) -> str:
    """A server over TCP: fakeredis or a real redis-server, emptied first."""
    name = "fake_tcp_url" if request.param == "fake" else "redis_url"
    found: str = request.getfixturevalue(name)
    return found


@pytest.fixture
def direct(url: str) -> Iterator[RedisConnection]:
    with RedisConnection.from_url(url) as conn:
        yield conn


def _dropper(url: str, markers: tuple[bytes, ...], times: int) -> ReplyDropper:
    where = urlsplit(url)
    assert where.hostname is not None
    assert where.port is not None
    return ReplyDropper((where.hostname, where.port), *markers, times=times)


@contextmanager
def _through_dropper(
    url: str, markers: tuple[bytes, ...], times: int, **kwargs: Any
) -> Iterator[tuple[ReplyDropper, RedisQueueSubscriber]]:
    """A subscriber whose connection goes through a :class:`ReplyDropper`."""
    proxy = _dropper(url, markers, times)
    try:
        with (
            RedisConnection.from_url(proxy.url) as conn,
            RedisQueueSubscriber(conn, TOPIC, **kwargs) as subscriber,
        ):
            yield proxy, subscriber
    finally:
        proxy.close()


def _publish(conn: RedisConnection, messages: list[bytes]) -> None:
    with RedisQueuePublisher(conn) as publisher:
        for message in messages:
            publisher.send_message(TOPIC, message)


def _left_behind(conn: RedisConnection) -> list[bytes]:
    """A subscriber's taken keys left in Redis.

    The producers hash of an object stream stays (with a TTL), so late subscribers know
    that its run finished.
    """
    found: list[bytes] = conn.client.keys(conn.keys.queue(TOPIC) + ":taken:*")
    ends = conn.keys.queue_end(TOPIC)
    assert conn.client.ttl(ends) > 0 or not conn.client.exists(ends)
    return found


def test_a_pop_whose_reply_is_lost_hands_the_message_over(
    url: str, direct: RedisConnection
) -> None:
    sent = [b"m%d" % i for i in range(5)]
    _publish(direct, sent)
    with _through_dropper(url, BLOCKING_POPS, 2, timeout=10) as (proxy, subscriber):
        got = [subscriber.next_message() for _ in sent]
    assert proxy.dropped == 2  # two pops ran in Redis and their replies were lost
    assert got == sent
    assert direct.client.llen(direct.keys.queue(TOPIC)) == 0
    assert _left_behind(direct) == []


def test_a_poll_whose_reply_is_lost_raises_then_hands_the_message_over(
    url: str, direct: RedisConnection
) -> None:
    _publish(direct, [b"first", b"second"])
    with _through_dropper(url, POLLS, 1) as (proxy, subscriber):
        with pytest.raises(BackendError, match=TOPIC):
            subscriber.poll_message()
        got = [subscriber.poll_message(), subscriber.poll_message(), subscriber.poll_message()]
    assert proxy.dropped == 1
    assert got == [b"first", b"second", None]
    assert _left_behind(direct) == []


def test_polls_while_redis_is_down_say_what_they_check(tmp_path: Path) -> None:
    """The second poll said "reading back a pop whose reply was lost" when Redis had
    simply been down all along."""
    server = RedisProcess(tmp_path).start()
    try:
        with (
            RedisConnection.from_url(server.url) as conn,
            RedisQueueSubscriber(conn, TOPIC, max_outage=0.1) as subscriber,
        ):
            server.kill()
            with pytest.raises(BackendError, match=f"pop from topic '{TOPIC}'"):
                subscriber.poll_message()
            with pytest.raises(BackendError) as info:
                subscriber.poll_message()
    finally:
        server.close()
    assert "checking what an unanswered pop may have taken" in str(info.value)
    assert "reply was lost" not in str(info.value)


def test_closing_puts_a_taken_message_not_handed_over_back_at_the_head(
    url: str, direct: RedisConnection
) -> None:
    _publish(direct, [b"first", b"second"])
    with (
        _through_dropper(url, POLLS, 1) as (proxy, subscriber),
        pytest.raises(BackendError),
    ):
        subscriber.poll_message()  # "first" is taken; its reply is lost
    assert proxy.dropped == 1
    assert direct.client.lrange(direct.keys.queue(TOPIC), 0, -1) == [b"first", b"second"]
    assert _left_behind(direct) == []
    with RedisQueueSubscriber(direct, TOPIC, timeout=5) as other:
        assert [other.next_message(), other.next_message()] == [b"first", b"second"]


@pytest.mark.parametrize("written", [[b"late"], [b"x", b"y", b"z"]], ids=["one", "three"])
def test_what_fills_a_lost_pops_key_later_is_handed_over_or_reported(
    url: str, direct: RedisConnection, written: list[bytes]
) -> None:
    """A pop still blocked on the server when the client gave up may take a message later.

    Something else adding several messages to the key is a possible loss, reported.
    """
    with _through_dropper(url, BLOCKING_POPS, 1, timeout=0.3) as (proxy, subscriber):
        with pytest.raises(TimeoutError):
            subscriber.next_message()  # the empty pop's reply is dropped
        assert proxy.dropped == 1
        lost_key = direct.keys.queue_taken(TOPIC, subscriber._taker.owner, 0)
        direct.client.rpush(lost_key, *written)  # after the client gave up on the pop
        _publish(direct, [b"next"])
        if len(written) == 1:
            assert subscriber.next_message(timeout=5) == b"late"
        else:
            with pytest.raises(MessageLossError, match="something else changed it") as err:
                subscriber.next_message(timeout=5)
            assert (err.value.topic, err.value.possible) == (TOPIC, True)
            assert lost_key in str(err.value)
        assert subscriber.next_message(timeout=5) == b"next"
    assert _left_behind(direct) == []


def test_object_streams_over_a_list_lose_nothing_when_pop_replies_are_lost(
    url: str, direct: RedisConnection
) -> None:
    with (
        _through_dropper(url, POPS, 3, timeout=20) as (proxy, subscriber),
        StreamConsumer[int](subscriber, timeout=20) as consumer,
    ):
        with StreamProducer[int](RedisQueuePublisher(direct), batch_size=5) as producer:
            for i in range(60):
                producer.send(TOPIC, i)
            producer.close_topics(TOPIC)
        got = list(consumer)
    assert proxy.dropped == 3
    assert got == list(range(60))
    assert _left_behind(direct) == []


def test_a_taken_key_keeps_its_ttl_stays_short_and_goes_at_close(
    any_conn: RedisConnection,
) -> None:
    """Also on a cluster: the taken key shares the topic's hash tag."""
    sent = [b"%d" % i for i in range(3 * TRIM_EVERY)]
    _publish(any_conn, sent)
    with RedisQueueSubscriber(any_conn, TOPIC, timeout=5) as subscriber:
        taken = subscriber._taker.key(0)
        got, lengths = [], []
        for i in range(len(sent)):
            got.append(subscriber.next_message() if i % 2 else subscriber.poll_message())
            lengths.append(any_conn.client.llen(taken))
            assert 0 < any_conn.client.ttl(taken) <= TAKEN_TTL_S
        assert any_conn.client.lrange(taken, -1, -1) == [got[-1]]
    assert got == sent
    assert max(lengths) == TRIM_EVERY  # a full key is trimmed to its newest by the next pop
    assert _left_behind(any_conn) == []


def test_competing_subscribers_each_take_every_message_once(any_conn: RedisConnection) -> None:
    sent = [b"%d" % i for i in range(40)]
    _publish(any_conn, sent)
    with (
        RedisQueueSubscriber(any_conn, TOPIC) as one,
        RedisQueueSubscriber(any_conn, TOPIC) as two,
    ):
        got: list[bytes] = []
        while (message := (one if len(got) % 3 else two).poll_message()) is not None:
            got.append(message)
    assert sorted(got) == sorted(sent)


# -- bookkeeping (no I/O) -------------------------------------------------------------------


def _pops(taking: Taking, n: int, now: float = 0.0) -> Pop:
    """``n`` pops that each take a message; returns the last plan."""
    for _ in range(n):
        pop = taking.plan(now)
        taking.popped(pop, took=True, now=now)
    return pop


def test_pops_renew_the_ttl_and_trim_now_and_then() -> None:
    taking = Taking(settle=2.0, ttl=100.0)
    first = taking.plan(0.0)
    assert (first.trim, first.expire, first.drop) == (False, True, ())
    taking.popped(first, took=False, now=0.0)
    assert taking.plan(0.0).expire  # the key does not exist yet: it got no TTL
    _pops(taking, 1)
    assert taking.plan(10.0) == Pop(gen=0, trim=False, expire=False, drop=())
    assert taking.plan(50.0).expire  # half the TTL has passed
    _pops(taking, TRIM_EVERY - 1)
    assert taking.plan(10.0).trim
    _pops(taking, 1)
    assert (taking.length, taking.plan(10.0).trim) == (2, False)


@pytest.mark.parametrize("trimmed", [False, True])
def test_a_lost_pop_is_told_apart_by_length_also_with_its_trim(trimmed: bool) -> None:
    taking = Taking(settle=2.0, ttl=100.0)
    pop = _pops(taking, TRIM_EVERY if trimmed else 5)
    pop = taking.plan(1.0)
    assert pop.trim is trimmed
    before = taking.length
    taking.lost(pop, now=1.0)
    assert (taking.gen, taking.length) == (1, 0)  # a new key: the lost pop may still fill it
    after_trim = 1 if trimmed else before
    assert not taking.checked(0, after_trim, now=2.0)  # nothing taken yet: keep looking
    assert taking.checked(0, after_trim + 1, now=2.5)  # the lost pop took the last one
    assert taking.unsure == {}
    taking.hand_over(0)
    assert taking.plan(3.0).drop == (0,)


def test_an_unsure_key_settles_then_goes() -> None:
    taking = Taking(settle=2.0, ttl=100.0)
    taking.lost(taking.plan(0.0), now=10.0)
    assert not taking.checked(0, 0, now=11.0)
    assert 0 in taking.unsure
    assert not taking.checked(0, 0, now=12.0)
    assert taking.unsure == {}
    pop = taking.plan(12.0)
    assert pop.drop == (0,)
    taking.popped(pop, took=False, now=12.0)
    assert taking.drop == []


def test_an_unsure_key_of_an_impossible_length_is_refused() -> None:
    taking = Taking(settle=2.0, ttl=100.0)
    _pops(taking, 3)
    taking.lost(taking.plan(0.0), now=0.0)
    with pytest.raises(ValueError, match=r"holds 7 messages, where \(3,\) were expected"):
        taking.checked(0, 7, now=0.0)

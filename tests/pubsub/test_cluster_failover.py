"""Sharded pub/sub subscriptions across failovers and reshards of a real cluster.

Each test builds its own 3-master + 3-replica cluster (:mod:`tests.pubsub._cluster`),
keeps a publisher sending numbered messages (carrying on past failed publishes while
the cluster reconfigures, as a user would) and a subscriber reading them on threads,
then breaks the node that owns the topic's slot. Whatever the fault, a message may be
lost only behind a :class:`MessageLossError`, reported once, and everything published
once the subscription is back arrives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import (
    BackendError,
    BackendUnavailable,
    MessageLossError,
    ReceiveTimeout,
)
from framework.pubsub import RedisPublisher, RedisSubscriber
from framework.stream import StreamConsumer, StreamProducer
from tests.pubsub._cluster import LocalCluster, slot_of, wait_until

TOPIC = "t"
#: Seconds between two published messages.
TICK = 0.03
#: Messages published after the loss report that must arrive before a test stops.
AFTER = 20
#: Longest wait (s) for the subscriber to report the loss (the old code never did).
REPORT_TIMEOUT = 20.0

pytestmark = pytest.mark.timeout(60)

Event = tuple[str, Any, float]  # (kind, value, monotonic time)


@pytest.fixture
def cluster(require_redis_cluster: None) -> Iterator[LocalCluster]:
    """A fresh 3-master + 3-replica cluster; every node is stopped even if the test fails."""
    with LocalCluster() as local:
        yield local


@pytest.fixture
def conn(cluster: LocalCluster) -> Iterator[RedisConnection]:
    with RedisConnection.from_url(cluster.url) as connection:
        yield connection


# --- traffic --------------------------------------------------------------------------------


@dataclass
class Reader:
    """Reads the subscriber on a thread, noting messages, losses and outages in order.

    ``("down", None, t)`` notes a call after which ``listening_since`` was None.
    """

    subscriber: RedisSubscriber
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="test-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.subscriber.next_message(timeout=0.5)
            except StopIteration:
                return
            except ReceiveTimeout:
                pass
            except MessageLossError as exc:
                self.events.append(("loss", exc, time.monotonic()))
            except BackendUnavailable as exc:  # the slot has no owner yet: keep reading
                self.events.append(("unavailable", exc, time.monotonic()))
            else:
                topic, number = data.decode().split(":")
                self.events.append(("message", (topic, int(number)), time.monotonic()))
            if self.subscriber.listening_since is None:
                self.events.append(("down", None, time.monotonic()))

    def of(self, kind: str) -> list[Any]:
        return [value for what, value, _ in list(self.events) if what == kind]

    def received(self, topic: str = TOPIC) -> list[int]:
        return [number for name, number in self.of("message") if name == topic]

    def stop(self) -> None:
        self.subscriber.close()  # next_message then raises StopIteration
        self.thread.join(5)
        assert not self.thread.is_alive()


@dataclass
class Ticker:
    """Publishes ``topic:n`` for n = 0, 1, ... round-robin over ``topics`` on a thread.

    A failed publish is noted and the next number goes on, as a user's loop would.
    """

    publisher: RedisPublisher
    topics: Sequence[str] = (TOPIC,)
    sent: list[tuple[str, int, float]] = field(default_factory=list)  # published, and when

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="test-ticker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        number = 0
        while not self._stop.wait(TICK):
            topic, started = self.topics[number % len(self.topics)], time.monotonic()
            try:
                self.publisher.send_message(topic, b"%s:%d" % (topic.encode(), number))
            except BackendError:  # the cluster is reconfiguring
                pass
            else:
                self.sent.append((topic, number, started))
            number += 1

    def of(self, topic: str = TOPIC) -> list[tuple[int, float]]:
        return [(number, at) for name, number, at in list(self.sent) if name == topic]

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


def silent_losses(reader: Reader, ticker: Ticker, topic: str = TOPIC) -> list[int]:
    """Published messages of ``topic`` missing with no loss report before the next one."""
    published = [number for number, _ in ticker.of(topic)]
    silent: list[int] = []
    last, reported = -1, False
    for kind, value, _ in reader.events:
        if kind == "loss":
            reported = True
        elif kind == "message" and value[0] == topic and value[1] > last:
            missing = [n for n in published if last < n < value[1]]
            if missing and not reported:
                silent += missing
            last, reported = value[1], False
    return silent


def run_fault(
    conn: RedisConnection,
    fault: Callable[[], None],
    topics: Sequence[str] = (TOPIC,),
    sharded: bool | None = None,
) -> tuple[Reader, Ticker]:
    """Traffic before ``fault``, through it, and until ``AFTER`` messages of ``TOPIC``
    published after the loss report have arrived; then everything still in flight."""
    with (
        RedisSubscriber(conn, topics, sharded=sharded) as subscriber,
        RedisPublisher(conn, sharded=sharded) as publisher,
    ):
        reader, ticker = Reader(subscriber), Ticker(publisher, topics)
        try:
            wait_until(lambda: len(reader.received()) >= 5, "messages before the fault")
            fault()
            wait_until(lambda: bool(reader.of("loss")), "the loss report", REPORT_TIMEOUT)
            reported = next(at for kind, _, at in reader.events if kind == "loss")

            def followed() -> bool:
                received = set(reader.received())
                return sum(n in received for n, at in ticker.of() if at > reported) >= AFTER

            wait_until(followed, "messages published after the loss report")
        finally:
            ticker.stop()
        lasts = {topic: ticker.of(topic)[-1][0] for topic in topics}
        wait_until(
            lambda: all(n in reader.received(t) for t, n in lasts.items()), "the last messages", 5
        )
        reader.stop()
    return reader, ticker


def check(reader: Reader, ticker: Ticker) -> None:
    """One possible loss, reported; nothing lost silently; nothing lost after the report."""
    losses = reader.of("loss")
    assert len(losses) == 1, losses
    assert losses[0].possible
    assert losses[0].topic == TOPIC
    assert "interrupted" in str(losses[0])
    assert silent_losses(reader, ticker) == []
    reported = next(at for kind, _, at in reader.events if kind == "loss")
    received = set(reader.received())
    after = [number for number, at in ticker.of() if at > reported]
    assert len(after) >= AFTER
    assert [number for number in after if number not in received] == []
    # An outage past the failure budget is reported too; a failover takes about that long.
    assert len(reader.of("unavailable")) <= 1


def owner_of_topic(cluster: LocalCluster, conn: RedisConnection) -> tuple[int, int]:
    """The topic channel's slot and the port of the master that owns it."""
    slot = slot_of(conn.keys.topic(TOPIC))
    master = cluster.owner(slot)
    assert master is not None
    return slot, master


def killer(cluster: LocalCluster, slot: int, master: int) -> Callable[[], None]:
    """A fault: SIGKILL ``master``, then wait until its replica serves ``slot``."""
    replica = cluster.replica_of(master)

    def kill() -> None:
        cluster.kill(master)
        wait_until(lambda: cluster.agreed_owner(slot) == replica, "the replica's promotion")

    return kill


# --- tests ----------------------------------------------------------------------------------


def test_subscription_follows_the_promoted_replica_of_a_killed_master(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    slot, master = owner_of_topic(cluster, conn)
    reader, ticker = run_fault(conn, killer(cluster, slot, master))
    check(reader, ticker)
    down = [at for kind, _, at in reader.events if kind == "down"]
    reported = next(at for kind, _, at in reader.events if kind == "loss")
    assert down, "listening_since never went None while the subscription was down"
    assert all(at <= reported for at in down)  # and it is up again since the report


def test_subscription_follows_the_promoted_replica_of_a_hung_master(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    """Before: the subscription stayed on the hung master, and nothing arrived any more."""
    slot, master = owner_of_topic(cluster, conn)
    replica = cluster.replica_of(master)

    def hang() -> None:
        cluster.hang(master)  # its sockets stay open: nothing fails, it just says nothing
        # Asked of the replica: the hung master would not answer.
        wait_until(lambda: cluster.owner(slot, asked=replica) == replica, "the promotion")

    # A hung node is given up after a socket timeout without an answer.
    with RedisConnection.from_url(f"{cluster.url}?socket_timeout=2") as quick:
        check(*run_fault(quick, hang))


def test_a_classic_subscription_moves_to_a_live_node_when_its_node_is_killed(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    """``sharded=False``: every node relays classic pub/sub, so any live one will do.

    The subscription starts on the master of the channel's slot. Before, it kept
    reconnecting to the dead address.
    """
    slot, master = owner_of_topic(cluster, conn)
    check(*run_fault(conn, killer(cluster, slot, master), sharded=False))


def test_other_topics_carry_on_while_one_follows_its_slot(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    slot, master = owner_of_topic(cluster, conn)
    elsewhere = next(
        f"u{i}" for i in range(100) if cluster.owner(slot_of(conn.keys.topic(f"u{i}"))) != master
    )
    reader, ticker = run_fault(conn, killer(cluster, slot, master), topics=[TOPIC, elsewhere])
    check(reader, ticker)
    assert str([TOPIC]) in str(reader.of("loss")[0])  # only the topic that lost its node
    # The other topic's node never failed: every message of it arrived, in order.
    assert reader.received(elsewhere) == [number for number, _ in ticker.of(elsewhere)]


def test_subscription_follows_a_planned_failover(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    slot, master = owner_of_topic(cluster, conn)
    replica = cluster.replica_of(master)
    check(*run_fault(conn, lambda: cluster.failover(replica)))
    assert cluster.agreed_owner(slot) == replica


def test_subscription_follows_its_slot_to_another_master(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    slot, master = owner_of_topic(cluster, conn)
    target = next(port for port in cluster.masters() if port != master)

    def move() -> None:
        cluster.move_slot(slot, master, target)
        wait_until(lambda: cluster.agreed_owner(slot) == target, "the slot's new owner")

    check(*run_fault(conn, move))


def test_a_slot_left_without_any_owner_is_reported_after_max_outage(
    cluster: LocalCluster, conn: RedisConnection
) -> None:
    """Not the defect (the old code raised too): the bound on following a slot."""
    _, master = owner_of_topic(cluster, conn)
    replica = cluster.replica_of(master)
    with RedisSubscriber(conn, TOPIC, max_outage=3) as subscriber:
        cluster.kill(replica)
        cluster.kill(master)  # nothing left to promote: the slot stays without an owner
        for _ in range(2):  # raised once per budget, and it keeps trying in between
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match=rf"\[{TOPIC!r}\]"):
                subscriber.next_message()
            assert time.monotonic() - started < 10
            assert subscriber.listening_since is None


# --- end to end: objects over the stream layer ------------------------------------------------


def _retrying(call: Callable[[], None], deadline: float) -> None:
    """Call until it stops failing with a BackendError (the cluster is reconfiguring)."""
    while True:
        try:
            return call()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.parametrize("fault", ["kill", "failover"])
def test_stream_consumer_gets_every_object_or_the_loss_across_a_failover(
    cluster: LocalCluster, conn: RedisConnection, fault: str
) -> None:
    total = 150
    slot, master = owner_of_topic(cluster, conn)
    replica = cluster.replica_of(master)
    halfway = threading.Event()

    def produce(producer: StreamProducer[int]) -> None:
        deadline = time.monotonic() + 30
        for number in range(total):
            if number == total // 3:
                halfway.set()
            try:
                producer.send(TOPIC, number)
            except BackendError:  # the batch stays buffered: flush until it is published
                _retrying(producer.flush, deadline)
            time.sleep(TICK)
        _retrying(lambda: producer.close_topics(TOPIC), deadline)

    consumer = StreamConsumer[int](RedisSubscriber(conn, TOPIC), timeout=1.0)
    producer = StreamProducer[int](RedisPublisher(conn))
    thread = threading.Thread(target=produce, args=(producer,), name="test-producer")
    received: list[int] = []
    losses: list[MessageLossError] = []
    ended = False
    try:
        thread.start()
        assert halfway.wait(10)
        if fault == "kill":
            cluster.kill(master)
        else:
            cluster.failover(replica)
        # Well within the 30 s after which a silent producer counts as gone.
        deadline = time.monotonic() + 25
        while not ended and time.monotonic() < deadline:
            try:
                received.append(consumer.next_object())
            except StopIteration:
                ended = True
            except MessageLossError as exc:
                losses.append(exc)
            except (ReceiveTimeout, BackendUnavailable):
                continue
        thread.join(10)
    finally:
        consumer.close()
        producer.close()
    assert ended, f"no end of stream; got {len(received)} objects and losses {losses}"
    assert cluster.agreed_owner(slot) == replica
    # The producer lived on: its end of stream came, it was never counted gone.
    assert [loss for loss in losses if loss.gone] == []
    assert received == sorted(set(received))  # in order, no duplicates
    missing = set(range(total)) - set(received)
    named = {n for loss in losses if loss.first is not None and loss.last is not None
             for n in range(loss.first, loss.last + 1)}  # fmt: skip
    assert missing <= named, (sorted(missing - named), losses)

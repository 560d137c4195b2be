"""``stream_objects`` to targets on different cluster masters while one master is killed.

A 3-master + 3-replica cluster of the test module's own (:mod:`tests.pubsub._cluster`)
holds one target mailbox per master. Between two rounds the master of one target's
mailbox is SIGKILLed, before its replica is promoted: a cluster pipeline over every
target's mailbox then fails as a whole. Only that target may suffer: the others get
every object and answer OK. The affected target's slot stays open while its object is
sent again; if the replica is promoted within the round's timeout the object arrives
then (once), otherwise the target gets a COMMUNICATION_ERROR naming the Redis error and
later rounds, which reach it again, hear that it lost objects.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import BackendError, BackendUnavailable
from framework.objects import (
    EngineConfig,
    FLContext,
    ObjectProducer,
    ReservedHeaderKey,
    ReturnCode,
    Shareable,
)
from framework.objects.mailbox import post
from tests.objects.conftest import EngineFactory
from tests.objects.helpers import ListProducer, RecordingFactory, shareable
from tests.pubsub._cluster import HOST, LocalCluster, slot_of, wait_until

pytestmark = pytest.mark.timeout(60)

#: Seconds after which an unanswered object is sent again (the affected target's, here).
RESEND_AFTER = 0.3
#: Rounds a stream may run at most (the outage lasts a few rounds of 1 s).
MAX_ROUNDS = 20
#: Rounds sent once the cluster agrees that the replica was promoted.
AFTER_PROMOTION = 2


@pytest.fixture(scope="module")
def cluster(require_redis_cluster: None) -> Iterator[LocalCluster]:
    """One 3-master + 3-replica cluster for the module; each test kills another master."""
    with LocalCluster() as local:
        yield local


@pytest.fixture
def conn(cluster: LocalCluster) -> Iterator[RedisConnection]:
    wait_until(cluster.settled, "the cluster to settle")
    # Only live nodes: a node killed by an earlier test would be a dead startup node.
    url = "redis+cluster://" + ",".join(f"{HOST}:{port}" for port in cluster.alive)
    with RedisConnection.from_url(url) as connection:
        yield connection


@dataclass
class Layout:
    """A sender and one target per master; ``victim``'s mailbox is on ``port``."""

    sender: str
    targets: list[str]
    victim: str
    port: int
    slot: int


def layout(cluster: LocalCluster, conn: RedisConnection, tag: str) -> Layout:
    """Names whose mailboxes hash to every master; the victim's master has a replica."""
    masters = cluster.masters()
    port = next(m for m in masters if _has_replica(cluster, m))
    by_master: dict[int, str] = {}
    sender = None
    for i in itertools.count():
        name = f"{tag}-{i}"
        master = cluster.owner(slot_of(conn.keys.mailbox(name)))
        assert master is not None
        if master != port and sender is None:
            sender = name  # its reply mailboxes share its slot: on a master that stays up
        elif master not in by_master:
            by_master[master] = name
        if sender is not None and len(by_master) == len(masters):
            break
    assert sender is not None
    victim = by_master[port]
    targets = sorted(by_master.values())
    return Layout(sender, targets, victim, port, slot_of(conn.keys.mailbox(victim)))


def _has_replica(cluster: LocalCluster, master: int) -> bool:
    try:
        cluster.replica_of(master)
    except LookupError:
        return False
    return True


class KillingProducer(ObjectProducer):
    """Sends ``{"round": n}``; kills the victim's master after round 0's replies.

    Ends ``AFTER_PROMOTION`` rounds after the cluster agrees on the promoted replica.
    """

    def __init__(self, cluster: LocalCluster, where: Layout, timeout: float) -> None:
        self.cluster = cluster
        self.where = where
        self.timeout = timeout
        self.rounds: list[dict[str, Shareable]] = []
        self.promoted_at: int | None = None  # the first round produced after promotion

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        n = len(self.rounds)
        if self.promoted_at is None and n > 0 and self._promoted():
            self.promoted_at = n
        if n >= MAX_ROUNDS or (
            self.promoted_at is not None and n >= self.promoted_at + AFTER_PROMOTION
        ):
            return None, self.timeout
        return shareable(round=n), self.timeout

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        self.rounds.append(replies)
        if len(self.rounds) == 1:
            self.cluster.kill(self.where.port)
        return None

    def _promoted(self) -> bool:
        return self.cluster.agreed_owner(self.where.slot) not in (None, self.where.port)

    def codes(self, target: str) -> list[str]:
        return [r[target].get_return_code() for r in self.rounds]


def _run(
    cluster: LocalCluster,
    conn: RedisConnection,
    make_engine: EngineFactory,
    tag: str,
    timeout: float,
) -> tuple[Layout, KillingProducer, dict[str, RecordingFactory], str]:
    """Stream to one target per master, killing the victim's master after round 0."""
    where = layout(cluster, conn, tag)
    config = EngineConfig(inline_limit=64 * 1024, close_timeout=5, resend_after=RESEND_AFTER)
    server = make_engine(conn, where.sender, config=config)
    factories = {name: RecordingFactory(sleeps=False) for name in where.targets}
    for name, factory in factories.items():
        make_engine(conn, name).register_stream_processing("fl", "w", factory)
    producer = KillingProducer(cluster, where, timeout)
    rc, _ = server.stream_objects("fl", "w", {}, where.targets, producer, FLContext())
    return where, producer, factories, rc


def _applied(factory: RecordingFactory) -> list[int]:
    """The rounds one target's consumer was given, in order (each must be there once)."""
    (session,) = factory.wait_ended(1, timeout=10)
    return [obj["round"] for obj in session.consumed]


def test_outage_longer_than_a_round_fails_only_the_dead_masters_target(
    cluster: LocalCluster, conn: RedisConnection, make_engine: EngineFactory
) -> None:
    where, producer, factories, rc = _run(cluster, conn, make_engine, "short", timeout=1.0)
    rounds = len(producer.rounds)
    healthy = [t for t in where.targets if t != where.victim]

    for target in healthy:  # every round, the kill's included: OK, each object applied once
        assert producer.codes(target) == [ReturnCode.OK] * rounds, target
        assert [r[target]["n"] for r in producer.rounds] == list(range(1, rounds + 1))
        assert _applied(factories[target]) == list(range(rounds))
        assert factories[target].returned[0].rc == ReturnCode.OK
    assert producer.promoted_at is not None, "the replica was never promoted"
    assert producer.promoted_at < rounds  # rounds were sent after the promotion

    # While its master was down, the victim's slot held the Redis error, not a timeout.
    codes = producer.codes(where.victim)
    assert codes[0] == ReturnCode.OK
    down = [r[where.victim] for r in producer.rounds[1 : producer.promoted_at]]
    assert down, "no round ran while the master was down"
    assert ReturnCode.COMMUNICATION_ERROR in [reply.get_return_code() for reply in down]
    for reply in down:
        if reply.get_return_code() == ReturnCode.COMMUNICATION_ERROR:
            why = reply.get_header(ReservedHeaderKey.ERROR)
            assert why.startswith("Sending failed: Could not post to"), why
            assert conn.keys.mailbox(where.victim) in why, why

    # Once promoted, the victim is reached again: it answers itself, and says that it
    # lost the objects of the outage (it applies none after a gap, and none twice).
    # (Its reader may still be reconnecting in the first round after the promotion.)
    later = [r[where.victim] for r in producer.rounds[producer.promoted_at :]]
    assert ReturnCode.OK not in codes[1:], codes
    gaps = [r for r in later if r.get_return_code() == ReturnCode.BAD_REQUEST_DATA]
    assert gaps, codes
    assert all("never arrived" in r.get_header(ReservedHeaderKey.ERROR) for r in gaps)
    assert _applied(factories[where.victim]) == [0]
    assert factories[where.victim].returned[0].rc == ReturnCode.BAD_REQUEST_DATA
    assert rc == ReturnCode.BAD_REQUEST_DATA  # the unconfirmed end is not reported as OK


def test_outage_within_a_round_delivers_the_object_once(
    cluster: LocalCluster, conn: RedisConnection, make_engine: EngineFactory
) -> None:
    where, producer, factories, rc = _run(cluster, conn, make_engine, "long", timeout=20.0)
    rounds = len(producer.rounds)

    # The round of the kill waited for the promotion: its resends reached the victim.
    for target in [*(t for t in where.targets if t != where.victim), where.victim]:
        assert producer.codes(target) == [ReturnCode.OK] * rounds, target
        assert [r[target]["n"] for r in producer.rounds] == list(range(1, rounds + 1))
        assert _applied(factories[target]) == list(range(rounds))
        assert factories[target].returned[0].rc == ReturnCode.OK
    assert producer.promoted_at is not None
    assert producer.promoted_at < rounds
    assert rc == ReturnCode.OK


# --- the same faults on fakeredis, posing as a cluster ---------------------------------------


def _fail_pipelines(
    monkeypatch: pytest.MonkeyPatch, conn: RedisConnection, written: bool, times: int = 99
) -> list[int]:
    """Make multi-key mailbox pipelines fail as a cluster's does when one node fails.

    ``written``: the commands ran before the answer was lost (a node died mid-reply).
    Returns the sizes of the failed pipelines.
    """
    monkeypatch.setattr(conn, "is_cluster", True)
    client = conn.client
    pipeline = client.pipeline
    failed: list[int] = []

    def failing(*args: Any, **kw: Any) -> Any:
        pipe = pipeline(*args, **kw)
        execute = pipe.execute

        def run(*a: Any, **k: Any) -> Any:
            stack = [cmd[0] for cmd in pipe.command_stack]
            posts = len(stack) > 1 and all(c[0] == "XADD" and ":objects" in c[1] for c in stack)
            if not posts or len(failed) >= times:
                return execute(*a, **k)
            failed.append(len(stack))
            if written:
                execute(*a, **k)
            raise redis.exceptions.ConnectionError("Connection reset by peer (test).")

        pipe.execute = run
        return pipe

    monkeypatch.setattr(client, "pipeline", failing)
    return failed


def test_post_answers_per_key_when_the_cluster_pipeline_fails(
    fake_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [fake_conn.keys.mailbox(name) for name in ("a", "b", "c")]
    for key in keys[:2]:
        fake_conn.client.xadd(key, {b"x": b"0"})  # c has no mailbox
    _fail_pipelines(monkeypatch, fake_conn, written=False)
    client, xadd = fake_conn.client, fake_conn.client.xadd

    def b_is_down(key: str, *args: Any, **kw: Any) -> Any:
        if key == keys[1]:
            raise redis.exceptions.ConnectionError("Error 111 connecting (test).")
        return xadd(key, *args, **kw)

    monkeypatch.setattr(client, "xadd", b_is_down)
    ok, down, absent = post(fake_conn, keys, {b"x": b"1"})
    assert ok is True
    assert absent is False
    assert isinstance(down, BackendUnavailable)
    assert keys[1] in str(down)
    assert keys[0] not in str(down)
    with pytest.raises(BackendError):  # every key failed: as one server down
        post(fake_conn, [keys[1], keys[1]], {b"x": b"1"})
    monkeypatch.setattr(fake_conn, "is_cluster", False)
    with pytest.raises(BackendError):  # one server: the pipeline's failure is every key's
        post(fake_conn, keys, {b"x": b"1"})


def test_a_post_repeated_after_a_failed_pipeline_is_applied_once(
    fake_conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every object and end notice is written, its answer lost, and written again."""
    server = make_engine(fake_conn, "server")
    factories = {name: RecordingFactory(sleeps=False) for name in ("a", "b", "c")}
    for name, factory in factories.items():
        make_engine(fake_conn, name).register_stream_processing("c", "t", factory)
    failed = _fail_pipelines(monkeypatch, fake_conn, written=True)
    producer = ListProducer([shareable(round=i) for i in range(3)])
    rc, _ = server.stream_objects("c", "t", {}, list(factories), producer, FLContext())
    for name, factory in factories.items():
        assert [r[name].get_return_code() for r in producer.rounds] == ["OK"] * 3, name
        assert [r[name]["n"] for r in producer.rounds] == [1, 2, 3]
        assert _applied(factory) == [0, 1, 2]
        assert factory.returned[0].events.count("finalize") == 1
    assert rc == ReturnCode.OK
    assert failed == [3, 3, 3, 3]  # three objects and the end notice

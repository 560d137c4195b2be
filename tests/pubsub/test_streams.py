from __future__ import annotations

import time

import pytest
import redis

from framework.buffers import Segments
from framework.connection import RedisConnection
from framework.exceptions import (
    BackendError,
    ConfigurationError,
    MessageLossError,
    ReceiveTimeout,
)
from framework.pubsub import (
    AckingSubscriber,
    AtomicPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
)


def _drain(sub: RedisStreamSubscriber, *, ack: bool = True) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sub.next_message(timeout=0.3))
        except (ReceiveTimeout, StopIteration):
            return got
        if ack:
            sub.ack_message()


def test_replay_from_start_new_only_and_from_an_id(any_conn: RedisConnection) -> None:
    with RedisStreamPublisher(any_conn) as pub:
        pub.send_message("t", b"m0")
        pub.send_message("t", Segments([b"m", b"1"]))
        latest = RedisStreamSubscriber(any_conn, "t", start="$", timeout=2)
        pub.send_message("t", b"m2")
    assert _drain(RedisStreamSubscriber(any_conn, "t")) == [b"m0", b"m1", b"m2"]
    assert _drain(latest) == [b"m2"]
    first_id = any_conn.client.xrange(any_conn.keys.events("t"))[0][0].decode()
    assert _drain(RedisStreamSubscriber(any_conn, "t", start=first_id)) == [b"m1", b"m2"]


def test_stream_is_trimmed_and_expires(conn: RedisConnection) -> None:
    with RedisStreamPublisher(conn, maxlen=10, ttl=60) as pub:
        for i in range(200):
            pub.send_message("t", b"%d" % i)
    key = conn.keys.events("t")
    assert conn.client.xlen(key) < 200
    assert 0 < conn.client.ttl(key) <= 60
    with pytest.raises(ConfigurationError):
        RedisStreamPublisher(conn, maxlen=0)


def test_group_members_share_entries_and_ack(any_conn: RedisConnection) -> None:
    a = RedisStreamSubscriber(any_conn, "t", group="g", consumer="a", count=1, timeout=1)
    b = RedisStreamSubscriber(any_conn, "t", group="g", consumer="b", count=1, timeout=1)
    assert isinstance(a, AckingSubscriber)
    assert (a.acks, a.complete) == (True, False)
    with RedisStreamPublisher(any_conn) as pub:
        for i in range(6):
            pub.send_message("t", b"%d" % i)
    got_a, got_b = [], []
    for _ in range(3):
        got_a.append(a.next_message())
        a.ack_message()
        got_b.append(b.next_message())
        b.ack_message()
    assert sorted(got_a + got_b) == [b"%d" % i for i in range(6)]
    assert any_conn.client.xpending(any_conn.keys.events("t"), "g")["pending"] == 0
    a.close()
    b.close()


def test_dead_members_pending_entries_are_claimed(any_conn: RedisConnection) -> None:
    with RedisStreamPublisher(any_conn) as pub:
        for i in range(4):
            pub.send_message("t", b"%d" % i)
    dead = RedisStreamSubscriber(any_conn, "t", group="g", consumer="dead", count=2)
    assert dead.next_message() == b"0"  # read two, acknowledged none, then "died"
    dead.close()
    live = RedisStreamSubscriber(any_conn, "t", group="g", consumer="live", claim_idle=0.2)
    time.sleep(0.3)
    assert sorted(_drain(live)) == [b"0", b"1", b"2", b"3"]
    live.close()


@pytest.mark.parametrize("backend", ["real", "cluster"])  # fakeredis claims past 10 x count
def test_a_dead_members_entry_is_claimed_behind_many_that_others_still_work_on(
    backend: str, request: pytest.FixtureRequest
) -> None:
    conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    key = conn.keys.events("t")
    with RedisStreamPublisher(conn) as pub:
        for i in range(13):
            pub.send_message("t", b"%d" % i)
    busy = RedisStreamSubscriber(conn, "t", group="g", consumer="busy", count=12)
    assert busy.next_message() == b"0"  # holds 0-11
    dead = RedisStreamSubscriber(conn, "t", group="g", consumer="dead", count=1)
    assert dead.next_message() == b"12"
    dead.close()
    time.sleep(1.1)
    # "busy" is still at work on its twelve entries: they are not idle, "12" is.
    held = [e["message_id"] for e in conn.client.xpending_range(key, "g", "-", "+", 20, "busy")]
    conn.client.xclaim(key, "g", "busy", 0, held, justid=True)
    # One claim looks at 10 x count = 10 pending entries, all of them "busy"'s: the next
    # one has to go on from there, not start over (which would find "12" only once the
    # first of "busy"'s entries had been idle for claim_idle).
    live = RedisStreamSubscriber(conn, "t", group="g", consumer="live", count=1, claim_idle=1.0)
    deadline = time.monotonic() + 0.9
    got = None
    while got is None and time.monotonic() < deadline:
        got = live.poll_message()
        time.sleep(0.05)
    assert got == b"12"
    live.close()
    busy.close()


def test_restarted_member_gets_its_own_pending_entries_first(conn: RedisConnection) -> None:
    with RedisStreamPublisher(conn) as pub:
        pub.send_message("t", b"0")
        pub.send_message("t", b"1")
    first = RedisStreamSubscriber(conn, "t", group="g", consumer="c", count=10)
    assert first.next_message() == b"0"
    first.close()
    again = RedisStreamSubscriber(conn, "t", group="g", consumer="c", count=10, claim_idle=60)
    assert _drain(again) == [b"0", b"1"]
    again.close()


def test_trimmed_pending_entries_are_reported(conn: RedisConnection) -> None:
    with RedisStreamPublisher(conn, maxlen=None) as pub:
        pub.send_message("t", b"0")
        first = RedisStreamSubscriber(conn, "t", group="g", consumer="c", count=10)
        assert first.next_message() == b"0"
        first.close()
        conn.client.xtrim(conn.keys.events("t"), maxlen=0)
        pub.send_message("t", b"1")
    again = RedisStreamSubscriber(conn, "t", group="g", consumer="c", count=10)
    with pytest.raises(MessageLossError, match="trimmed"):
        again.next_message(timeout=1)
    assert _drain(again) == [b"1"]
    again.close()


@pytest.mark.parametrize("group", [None, "g"])
def test_an_entry_without_a_message_is_skipped_not_reported_lost(
    conn: RedisConnection, group: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Someone else wrote an entry into the topic's stream: nothing of ours was lost."""
    sub = RedisStreamSubscriber(conn, "t", group=group, consumer="c" if group else None)
    with RedisStreamPublisher(conn) as pub:
        pub.send_message("t", b"0")
        foreign = conn.client.xadd(conn.keys.events("t"), {b"x": b"not a message"}).decode()
        pub.send_message("t", b"1")
    with caplog.at_level("WARNING", logger="framework.pubsub"):
        assert _drain(sub) == [b"0", b"1"]
    assert f"Skipping entries ['{foreign}'] of durable topic 't'" in caplog.text
    if group is not None:  # acknowledged: it never comes back to the group
        assert conn.client.xpending(conn.keys.events("t"), group)["pending"] == 0
    sub.close()


def test_every_group_member_ends_after_the_final_message(any_conn: RedisConnection) -> None:
    members = [
        RedisStreamSubscriber(any_conn, ["t", "u"], group="g", consumer=c, timeout=5) for c in "abc"
    ]
    with RedisStreamPublisher(any_conn) as pub:
        assert isinstance(pub, AtomicPublisher)
        pub.publish("t", b"x", source="p")
        pub.publish("t", b"end-t", final=True, source="p")
        pub.publish("u", b"end-u", final=True, source="p")
    assert any_conn.client.hgetall(any_conn.keys.events_end("t"))[b"p"].startswith(b"end:")
    got = [m for member in members for m in _drain(member)]
    assert sorted(got) == [b"end-t", b"end-u", b"x"]
    for member in members:  # every member has ended, not only those that got the end
        with pytest.raises(StopIteration):
            member.next_message(timeout=2)
        member.close()


def test_publisher_and_subscriber_give_their_connections_back_on_close(
    real_conn: RedisConnection,
) -> None:
    pools = [real_conn.once.connection_pool, real_conn.blocking.connection_pool]
    before = [len(pool._in_use_connections) for pool in pools]
    with RedisStreamPublisher(real_conn) as pub:
        sub = RedisStreamSubscriber(real_conn, "pinned", timeout=2)
        for i in range(3):
            pub.send_message("pinned", b"m%d" % i)
            assert sub.next_message() == b"m%d" % i
        # Each keeps one connection between calls instead of taking one per call.
        assert [len(pool._in_use_connections) for pool in pools] == [b + 1 for b in before]
        sub.close()
    assert [len(pool._in_use_connections) for pool in pools] == before


def test_subscriber_rides_out_a_killed_read_connection(real_conn: RedisConnection) -> None:
    with RedisStreamPublisher(real_conn) as pub:
        sub = RedisStreamSubscriber(real_conn, "killed", timeout=5)
        pub.send_message("killed", b"before")
        assert sub.next_message() == b"before"
        real_conn.client.client_kill_filter(_type="normal", skipme=True)
        pub.send_message("killed", b"after")
        assert sub.next_message() == b"after"
        sub.close()


def test_a_reader_inside_a_finished_run_hears_that_a_new_run_emptied_it(
    any_conn: RedisConnection,
) -> None:
    with RedisStreamPublisher(any_conn) as first:
        for i in range(10):
            first.publish("t", b"a%d" % i, source="A", final=i == 9)
    inside = RedisStreamSubscriber(any_conn, "t", count=2, timeout=2)
    assert [inside.next_message() for _ in range(3)] == [b"a0", b"a1", b"a2"]
    between = RedisStreamSubscriber(any_conn, "t", start="$", timeout=2)
    with RedisStreamPublisher(any_conn) as second:  # the next run empties the finished one
        second.publish("t", b"b0", source="B")
    late = RedisStreamSubscriber(any_conn, "t", timeout=2)
    with pytest.raises(MessageLossError, match=r"new run started and emptied") as info:
        _drain(inside)
    assert info.value.possible
    assert _drain(inside) == [b"b0"]
    assert _drain(between) == [b"b0"]  # it had read the whole run: nothing lost
    assert _drain(late) == [b"b0"]  # opened after the new run began: reads only that
    for sub in (inside, between, late):
        sub.close()


@pytest.mark.parametrize("backend", ["real", "cluster"])  # fakeredis keeps no read counter
def test_entries_trimmed_before_a_group_got_them_are_reported_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    any_conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    members = [
        RedisStreamSubscriber(any_conn, "t", group="g", consumer=c, timeout=0.5) for c in "ab"
    ]
    with RedisStreamPublisher(any_conn, maxlen=10) as pub:
        for i in range(300):
            pub.send_message("t", b"%d" % i)
    got: list[bytes] = []
    losses: list[MessageLossError] = []
    for member in members:
        while True:
            try:
                got.append(member.next_message())
                member.ack_message()
            except MessageLossError as exc:
                losses.append(exc)
            except ReceiveTimeout:
                break
    assert 0 < len(got) < 300  # trimming overtook the group
    assert got[-1] == b"299"
    (loss,) = losses  # one member reports it, once
    assert loss.count == 300 - len(got)
    assert f"Lost {loss.count} entries of durable topic 't': trimmed before" in str(loss)
    for member in members:
        member.close()


def test_a_loss_count_key_of_another_type_is_named_in_the_error(real_conn: RedisConnection) -> None:
    """WRONGTYPE on the count key was reported as a failure of the topic's stream key."""
    lost_key = real_conn.keys.events_lost("t")
    with RedisStreamSubscriber(real_conn, "t", group="g", timeout=0.5) as sub:
        with RedisStreamPublisher(real_conn) as pub:
            pub.send_message("t", b"0")
        real_conn.client.set(lost_key, b"not a hash")
        with pytest.raises(BackendError, match="WRONGTYPE") as info:
            _drain(sub)
    assert repr(lost_key) in str(info.value)


@pytest.mark.parametrize("backend", ["real", "cluster"])
def test_groups_whose_names_extend_each_other_count_their_losses_apart(
    backend: str, request: pytest.FixtureRequest
) -> None:
    conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    groups = {
        name: RedisStreamSubscriber(conn, "t", group=name, timeout=0.5) for name in ("g", "g:run")
    }
    with RedisStreamPublisher(conn, maxlen=10) as pub:
        for i in range(300):
            pub.send_message("t", b"%d" % i)
    for sub in groups.values():
        got, losses = 0, []
        while True:
            try:
                sub.next_message()
                sub.ack_message()
                got += 1
            except MessageLossError as exc:
                losses.append(exc.count)
            except ReceiveTimeout:
                break
        assert losses == [300 - got]
        sub.close()


def test_entries_a_claim_finds_trimmed_are_reported_even_if_the_claim_then_fails(
    real_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member died with entries pending; two were trimmed, one is not a message."""
    key = real_conn.keys.events("t")
    with RedisStreamPublisher(real_conn, maxlen=None) as pub:
        pub.send_message("t", b"0")
        real_conn.client.xgroup_create(key, "g", id="0")
        pub.send_message("t", b"1")
    real_conn.client.xadd(key, {b"x": b"not a message"})
    real_conn.client.xreadgroup("g", "dead", {key: ">"})  # all three pending for "dead"
    real_conn.client.xtrim(key, maxlen=1, approximate=False)  # the two messages are gone
    member = RedisStreamSubscriber(real_conn, "t", group="g", claim_idle=0.001, timeout=1)
    failing = {"left": 1}
    original = real_conn.client.xack

    def xack(*args: object) -> object:
        if failing["left"]:
            failing["left"] -= 1
            raise redis.ConnectionError("connection dropped")
        return original(*args)

    monkeypatch.setattr(real_conn.client, "xack", xack)
    time.sleep(0.01)
    # Acknowledging the foreign entry fails (the member rides that out and claims again,
    # but Redis dropped the trimmed ids from the pending list with the first claim).
    with pytest.raises(MessageLossError, match="trimmed before delivery") as info:
        member.next_message()
    assert info.value.count == 2
    assert failing["left"] == 0
    member.close()


def test_a_group_member_reads_on_while_redis_is_full(real_conn: RedisConnection) -> None:
    """Redis refuses scripts that may write when it is out of memory; the loss check is one.

    The member must go on reading (its consumer evicts what it reads, which frees memory).
    """
    with RedisStreamPublisher(real_conn) as pub:
        for i in range(3):
            pub.send_message("t", b"%d" % i)
    member = RedisStreamSubscriber(real_conn, "t", group="g", timeout=0.5)
    assert _drain(member) == [b"0", b"1", b"2"]
    admin = real_conn.client
    admin.config_set("maxmemory-policy", "noeviction")
    admin.config_set("maxmemory", 1)
    try:
        with pytest.raises(ReceiveTimeout):  # before: BackendError ... OutOfMemoryError
            member.next_message()
    finally:
        admin.config_set("maxmemory", 0)
    with RedisStreamPublisher(real_conn) as pub:
        pub.send_message("t", b"3")
    assert _drain(member) == [b"3"]
    member.close()

"""Retries, gaps, vanished senders, bad input and key hygiene, on fakeredis and real Redis."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from framework.buffers import Segments
from framework.cell import StreamCell, StreamFuture
from framework.connection import RedisConnection
from framework.exceptions import BackendUnavailable, StreamDataLost
from framework.objects import EngineConfig, FLContext, ReservedHeaderKey, ReturnCode, Shareable
from framework.objects import engine as engine_module
from framework.objects.engine import RedisStreamableEngine as Engine
from framework.objects.envelope import ENVELOPE_FIELD, PAYLOAD_FIELD, Envelope
from framework.objects.mailbox import post
from tests.cell.helpers import SMALL
from tests.objects.conftest import EngineFactory, server_and_site
from tests.objects.helpers import ListProducer, RecordingFactory, shareable, wait_for


def rcs(round_: dict[str, Any]) -> dict[str, str]:
    return {target: reply.get_return_code() for target, reply in round_.items()}


def test_a_retried_message_is_applied_once(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message is written twice, as a retried XADD would: objects, replies, end."""
    original = Engine._post

    def twice(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        original(self, env, keys, fields)
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", twice)
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(4)])
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert [r["site"]["n"] for r in producer.rounds] == [1, 2, 3, 4]
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1, 2, 3]
    assert session.events.count("finalize") == 1
    assert session.rc == ReturnCode.OK


def test_a_sequence_gap_is_reported_and_not_applied(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Object 1 is lost on the way: its slot times out, object 2 is refused as a gap."""
    original = Engine._post

    def lossy(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "data" and env.seq == 1:
            return [True] * len(keys)
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", lossy)
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)

    class ShortWaitForTheLostOne(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            return obj, (0.5 if len(self.rounds) == 1 else 20)

    producer = ShortWaitForTheLostOne([shareable(i=i) for i in range(3)])
    rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rc == ReturnCode.BAD_REQUEST_DATA  # the target lost an object: never OK
    assert [rcs(r) for r in producer.rounds] == [
        {"site": "OK"},
        {"site": "TIMEOUT"},
        {"site": "BAD_REQUEST_DATA"},
    ]
    error = producer.rounds[2]["site"].get_header(ReservedHeaderKey.ERROR)
    assert "Sequence gap: expected object 1, got 2" in error
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0]


def test_a_session_whose_sender_vanished_is_finalized_after_the_idle_timeout(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server, factory = server_and_site(make_engine, conn, config=EngineConfig(idle_timeout=0.3))

    class GoesSilent(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            if self.rounds:  # the sender stalls (as if gone) until the receiver gave up
                factory.wait_ended(1)
                return None, 1
            return super().produce(stream_ctx, fl_ctx)

    producer = GoesSilent([shareable(i=0)])
    rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rc == ReturnCode.TIMEOUT
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TIMEOUT
    assert session.events == ["consume", "finalize", "return"]


def test_objects_sent_after_the_target_expired_its_session_fail_the_stream(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """A slow producer: the receiver's idle expiry finalized the consumer mid-stream."""
    server, factory = server_and_site(make_engine, conn, config=EngineConfig(idle_timeout=0.3))

    class Slow(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            if self.rounds:
                factory.wait_ended(1)  # the receiver gave up on the session
            return super().produce(stream_ctx, fl_ctx)

    producer = Slow([shareable(i=i) for i in range(3)])
    rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert [rcs(r) for r in producer.rounds] == [
        {"site": "OK"},
        {"site": "EARLY_TERMINATION"},
        {"site": "EARLY_TERMINATION"},
    ]
    why = producer.rounds[1]["site"].get_header(ReservedHeaderKey.ERROR)
    assert "The session ended with TIMEOUT after object 0" in why
    assert "reply to object 1" in producer.rounds[2]["site"].get_header(ReservedHeaderKey.ERROR)
    assert rc == ReturnCode.EARLY_TERMINATION  # two objects were not applied: not OK
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0]


@pytest.mark.parametrize(
    "raw",
    [{b"h": b"{not json", b"p": b"x"}, {b"p": b"no envelope"}, {b"h": b'{"v": 2, "kind": "data"}'}],
    ids=["garbage", "no-envelope", "future-version"],
)
def test_unreadable_mailbox_entries_are_dropped_and_logged(
    conn: RedisConnection,
    make_engine: EngineFactory,
    caplog: pytest.LogCaptureFixture,
    raw: dict[bytes, bytes],
) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    conn.client.xadd(conn.keys.mailbox("site"), raw)
    producer = ListProducer([shareable(i=0)])
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
        # Another worker may have taken the bad entry: wait for its log line.
        _wait_for_log(caplog, "Dropping an unreadable message")
    assert rcs(producer.rounds[0]) == {"site": "OK"}  # the reading threads live on
    assert "invalid envelope" in caplog.text or "carries no object-protocol envelope" in caplog.text


@pytest.mark.parametrize("size", [100, 200_000], ids=["mailbox", "byte-stream"])
def test_a_payload_that_fails_to_decode_gets_bad_request_data(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    original = engine_module.seal_payload

    def garbling(env: Envelope, obj: Any, secret: bytes | None) -> Segments:
        if env.kind == "data" and env.seq == 0:
            return Segments([b"\x00\x00\x00\x05garbage" + bytes(size)])
        return original(env, obj, secret)

    monkeypatch.setattr(engine_module, "seal_payload", garbling)
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0), shareable(i=1)], timeout=5)
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    first = producer.rounds[0]["site"]
    assert first.get_return_code() == ReturnCode.BAD_REQUEST_DATA
    assert "Refusing the data of session" in caplog.text
    assert "from 'server'" in caplog.text
    # Nothing was applied; object 1 then reaches no session (its start was lost).
    assert rcs(producer.rounds[1]) == {"site": "BAD_REQUEST_DATA"}
    assert factory.sessions == []
    # The engine still works.
    again = ListProducer([shareable(i=9)])
    monkeypatch.setattr(engine_module, "seal_payload", original)
    assert server.stream_objects("c", "t", {}, ["site"], again, FLContext())[0] == "OK"
    assert rcs(again.rounds[0]) == {"site": "OK"}


def test_unsigned_objects_are_ignored_by_a_receiver_with_a_secret(
    conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender without the secret gets no answer (any answer could stand in for a
    genuine one, see below); the receiver's log says why."""
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site", secret=b"s3cret").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0)], timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rcs(producer.rounds[0]) == {"site": "TIMEOUT"}
    assert "Ignoring the data of session" in caplog.text
    assert "The frame is not signed" in caplog.text
    assert factory.sessions == []


@pytest.mark.parametrize("secret", [None, b"s3cret"], ids=["no-secret", "secret"])
def test_a_sender_refusing_pickle_hears_why_at_once_not_after_its_timeout(
    conn: RedisConnection,
    make_engine: EngineFactory,
    caplog: pytest.LogCaptureFixture,
    secret: bytes | None,
) -> None:
    """The target's (pickled) reply cannot be read by a sender with allow_pickle=False:
    it was ignored, and the sender waited out the round's timeout for a reply that had
    come. It now counts as BAD_REQUEST_DATA naming why."""
    server = make_engine(conn, "server", allow_pickle=False, secret=secret)
    factory = RecordingFactory()
    make_engine(conn, "site", secret=secret).register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0)], timeout=5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert time.monotonic() - started < 4
    reply = producer.rounds[0]["site"]
    assert reply.get_return_code() == ReturnCode.BAD_REQUEST_DATA
    why = reply.get_header(ReservedHeaderKey.ERROR)
    assert "cannot be read here" in why
    assert "allow_pickle is False" in why
    assert "Cannot read the reply of session" in caplog.text


def test_an_end_notice_is_answered_by_a_receiver_refusing_pickle(
    conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An end notice's payload (None) is verified, never deserialized: a receiver with
    allow_pickle=False ignored a sender's pickled None, which then waited out its timeout."""
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site", allow_pickle=False).register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0)], timeout=5)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert time.monotonic() - started < 4
    # The end is answered, but not with OK: the target applied none of the objects.
    assert rc == ReturnCode.BAD_REQUEST_DATA
    assert "none of its 1 object(s) were applied here" in caplog.text
    first = producer.rounds[0]["site"]
    assert first.get_return_code() == ReturnCode.BAD_REQUEST_DATA  # the object is refused
    assert "allow_pickle is False" in first.get_header(ReservedHeaderKey.ERROR)
    assert "Ignoring the end" not in caplog.text
    assert "sent no reply to the end notice" not in caplog.text
    assert factory.sessions == []


class _ForgingProducer(ListProducer):
    """After the first round, writes an unsigned object 1 of the running session into the
    site's mailbox, as anyone who can write to Redis could (the session id is in the name
    of the sender's reply mailbox)."""

    def __init__(self, conn: RedisConnection, objects: list[Shareable]) -> None:
        super().__init__(objects)
        self.conn = conn

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        if not self.rounds:
            (key,) = self.conn.client.scan_iter(match=self.conn.keys.replies("server", "*"))
            forged = Envelope(
                kind="data",
                tx=key.decode().rsplit(":", 1)[1],
                seq=1,
                origin="server",
                to=("site",),
                at=time.time(),
                channel="c",
                topic="t",
                timeout=5.0,
            )
            fields = {ENVELOPE_FIELD: forged.model_dump_json(), PAYLOAD_FIELD: b"garbage"}
            assert post(self.conn, [self.conn.keys.mailbox("site")], fields) == [True]
            time.sleep(0.3)  # the site reads it before the real object 1 is sent
        return super().process_replies(replies, stream_ctx, fl_ctx)


def test_an_unsigned_object_gets_no_reply_that_could_stand_in_for_the_real_ones(
    conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    factory = RecordingFactory()
    make_engine(conn, "site", secret=secret).register_stream_processing("c", "t", factory)
    producer = _ForgingProducer(conn, [shareable(i=0), shareable(i=1), shareable(i=2)])
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    # Before: the site answered the forgery with BAD_REQUEST_DATA, which the sender took
    # for object 1's reply, and the consumer's real reply to object 1 was dropped.
    assert [rcs(r) for r in producer.rounds] == [{"site": "OK"}] * 3
    assert [o["i"] for o in factory.wait_ended(1)[0].consumed] == [0, 1, 2]
    assert "Ignoring the data of session" in caplog.text


def test_a_forged_reply_is_ignored(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply whose payload is bound to another message never fills a slot."""
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    factory = RecordingFactory()
    make_engine(conn, "site", secret=secret).register_stream_processing("c", "t", factory)
    original = engine_module.seal_payload

    def misbound(env: Envelope, obj: Any, key: bytes | None) -> Segments:
        if env.kind == "reply":  # a genuine signed reply replayed under another sequence
            return original(env.model_copy(update={"seq": env.seq + 7}), obj, key)
        return original(env, obj, key)

    monkeypatch.setattr(engine_module, "seal_payload", misbound)
    producer = ListProducer([shareable(i=0)], timeout=0.5)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rcs(producer.rounds[0]) == {"site": "TIMEOUT"}


def test_no_key_is_left_without_a_ttl(conn: RedisConnection, make_engine: EngineFactory) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    seen: list[dict[bytes, int]] = []

    class Inspects(ListProducer):
        def process_replies(self, replies: Any, stream_ctx: Any, fl_ctx: FLContext) -> Any:
            seen.append({k: conn.client.pttl(k) for k in conn.client.scan_iter(count=1000)})
            return super().process_replies(replies, stream_ctx, fl_ctx)

    big = shareable(blob=bytes(300_000))
    producer = Inspects([shareable(i=0), big, shareable(i=2)], timeout=5)
    server.stream_objects("c", "t", {}, ["site", "ghost"], producer, FLContext())
    factory.wait_ended(1)
    seen.append({k: conn.client.pttl(k) for k in conn.client.scan_iter(count=1000)})
    assert all(seen)
    for keys in seen:
        # -1 is "no TTL"; -2 is a key deleted between SCAN and PTTL (a finished transfer).
        assert all(ttl != -1 for ttl in keys.values()), keys
    assert conn.keys.mailbox("ghost").encode() not in seen[-1]  # nothing written for a ghost


def test_a_reply_that_is_not_a_shareable_becomes_execution_exception(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    from framework.objects import ConsumerFactory, ObjectConsumer

    class Weird(ObjectConsumer):
        def consume(self, shareable: Shareable, stream_ctx: Any, fl_ctx: FLContext) -> Any:
            return True, {"not": "a shareable"}

    class Factory(ConsumerFactory):
        def get_consumer(self, stream_ctx: Any, fl_ctx: FLContext) -> ObjectConsumer:
            return Weird()

    server = make_engine(conn, "server")
    make_engine(conn, "site").register_stream_processing("c", "t", Factory())
    producer = ListProducer([shareable(i=0)])
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rcs(producer.rounds[0]) == {"site": "EXECUTION_EXCEPTION"}


def test_a_lost_message_is_sent_again_and_applied_once(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first copy of every object and of every reply is lost; the resend gets through."""
    original = Engine._post
    seen: set[tuple[str, int]] = set()

    def lossy(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind in ("data", "reply") and (env.kind, env.seq) not in seen:
            seen.add((env.kind, env.seq))
            return [True] * len(keys)
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", lossy)
    server = make_engine(conn, "server", config=EngineConfig(resend_after=0.1))
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(3)], timeout=20)
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert [r["site"]["n"] for r in producer.rounds] == [1, 2, 3]
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1, 2]


def _three_objects_arrive(
    conn: RedisConnection, make_engine: EngineFactory, inline_limit: int, pad: int
) -> None:
    """Stream three objects from "server" to "site": every round OK, each applied once."""
    config = EngineConfig(inline_limit=inline_limit, close_timeout=5, resend_after=0.1)
    server = make_engine(conn, "server", config=config)
    factory = RecordingFactory()
    make_engine(conn, "site", config=config).register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i, pad=b"x" * pad) for i in range(3)], timeout=20)
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert [rcs(r) for r in producer.rounds] == [{"site": "OK"}] * 3
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1, 2]


@pytest.mark.parametrize("size", [10, 200_000], ids=["mailbox", "byte-stream"])
def test_a_send_that_redis_fails_for_a_moment_is_tried_again(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """Redis unreachable when object 1 is sent (a restart, a dropped connection).

    Before, object 1 failed at once with COMMUNICATION_ERROR, and the site refused every
    later object as a sequence gap (BAD_REQUEST_DATA): a blip ended the whole session.
    """
    original = Engine.send
    failed: list[int] = []

    def blip(self: Engine, env: Envelope, *args: Any) -> Any:
        if env.kind == "data" and env.seq == 1 and not failed:
            failed.append(env.seq)
            raise BackendUnavailable("Redis at redis://127.0.0.1:1/0 is unreachable (test).")
        return original(self, env, *args)

    monkeypatch.setattr(Engine, "send", blip)
    _three_objects_arrive(conn, make_engine, inline_limit=64 * 1024, pad=size)
    assert failed == [1]


def test_a_byte_stream_whose_chunks_redis_lost_is_sent_again(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis lost the chunks of object 1's byte stream (a node restarted without persistence).

    Before, its round failed with COMMUNICATION_ERROR and the rest of the session with
    sequence gaps.
    """
    original = Engine.send
    lost: list[int] = []

    def losing(self: Engine, env: Envelope, *args: Any) -> Any:
        reached, future = original(self, env, *args)
        if env.kind == "data" and env.seq == 1 and not lost and future is not None:
            lost.append(env.seq)
            future.cancel()  # the transfer ends; its waiter sees the loss below
            failed = StreamFuture(9)
            failed.set_exception(StreamDataLost("Stream 9: Redis no longer holds chunks 0 to 4."))
            return reached, failed
        return reached, future

    monkeypatch.setattr(Engine, "send", losing)
    _three_objects_arrive(conn, make_engine, inline_limit=1024, pad=50_000)
    assert lost == [1]


def test_a_send_that_redis_keeps_failing_names_the_error_once_the_round_ends(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(self: Engine, env: Envelope, *args: Any) -> Any:
        raise BackendUnavailable("Redis at redis://127.0.0.1:1/0 is unreachable (test).")

    server, _ = server_and_site(make_engine, conn)
    monkeypatch.setattr(Engine, "send", down)
    producer = ListProducer([shareable(i=0)], timeout=0.5)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    (reply,) = producer.rounds[0].values()
    assert reply.get_return_code() == "COMMUNICATION_ERROR"
    assert "unreachable (test)" in reply.get_header(ReservedHeaderKey.ERROR)


def test_a_flushed_redis_is_survived_without_a_silent_loss(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """Redis loses every key (a restart without persistence): mailboxes come back."""
    config = EngineConfig(ttl=4)  # refreshes (and checks) its mailbox every second
    server = make_engine(conn, "server", config=config)
    factory = RecordingFactory()
    make_engine(conn, "site", config=config).register_stream_processing("c", "t", factory)
    conn.client.flushall()
    first = ListProducer([shareable(i=0)], timeout=5)
    server.stream_objects("c", "t", {}, ["site"], first, FLContext())
    # Either the site's mailbox was back already, or the sender was told who is missing.
    assert rcs(first.rounds[0])["site"] in {"OK", "COMMUNICATION_ERROR"}
    wait_for(lambda: conn.client.exists(conn.keys.mailbox("site")), "the site's new mailbox")
    again = ListProducer([shareable(i=1)], timeout=5)
    assert server.stream_objects("c", "t", {}, ["site"], again, FLContext())[0] == "OK"
    assert rcs(again.rounds[0]) == {"site": "OK"}


@pytest.mark.parametrize("pad", [10, 200_000], ids=["mailbox", "byte-stream"])
def test_keys_lost_mid_session_cost_no_object(
    conn: RedisConnection, make_engine: EngineFactory, pad: int
) -> None:
    """Redis loses every key between two objects (a restart without persistence).

    Before, object 1 found no mailbox and failed at once (as for an engine that shut
    down), and the site refused every later object as a sequence gap.
    """
    config = EngineConfig(ttl=4, inline_limit=1024, resend_after=0.2)
    server = make_engine(conn, "server", config=config)
    factory = RecordingFactory()
    make_engine(conn, "site", config=config).register_stream_processing("c", "t", factory)

    class Flushes(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            if len(self.rounds) == 1:
                conn.client.flushall()
            return super().produce(stream_ctx, fl_ctx)

    producer = Flushes([shareable(i=i, pad=b"x" * pad) for i in range(3)], timeout=15)
    rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert [rcs(r) for r in producer.rounds] == [{"site": "OK"}] * 3
    assert rc == ReturnCode.OK
    assert [o["i"] for o in factory.wait_ended(1)[0].consumed] == [0, 1, 2]


def test_an_engine_that_shut_down_leaves_a_mark_and_a_restarted_one_clears_it(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """A sender tells a target that shut down (fail at once) from a mailbox Redis lost."""
    mark = conn.keys.engine_closed("site")
    with StreamCell(conn, "site", config=SMALL) as cell:
        site = Engine(cell)
        assert not conn.client.exists(mark)
        site.shutdown_streamer()
        assert 0 < conn.client.pttl(mark) <= EngineConfig().ttl * 1000
        again = Engine(cell)
        assert not conn.client.exists(mark)
        again.shutdown_streamer()


def _tampering(monkeypatch: pytest.MonkeyPatch, kind: str, **changes: Any) -> None:
    """Rewrite the envelope of every ``kind`` message on its way into Redis.

    The signed payload is left as it was: this is what anyone who may write to Redis
    can do to a genuine entry (read it, ``XDEL`` it, ``XADD`` an altered copy).
    """
    original = Engine._post

    def altered(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == kind:
            forged = env.model_copy(update=changes).model_dump_json()
            fields = {**fields, ENVELOPE_FIELD: forged}
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", altered)


def test_a_signed_object_rerouted_to_another_topic_is_refused(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel and topic choose the consumer: with a secret, they must be signed too."""
    _tampering(monkeypatch, "data", topic="other")
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    meant, other = RecordingFactory(), RecordingFactory()
    site = make_engine(conn, "site", secret=secret)
    site.register_stream_processing("c", "t", meant)
    site.register_stream_processing("c", "other", other)
    producer = ListProducer([shareable(i=0)], timeout=0.5)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    # Not answered: the altered copy is not what the sender signed.
    assert rcs(producer.rounds[0]) == {"site": "TIMEOUT"}
    assert other.sessions == []
    assert meant.sessions == []


def test_a_signed_reply_altered_to_end_the_session_is_ignored(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply's ``ended`` flag drops the target from the stream: it must be signed too."""
    _tampering(monkeypatch, "reply", ended=True)
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    factory = RecordingFactory()
    make_engine(conn, "site", secret=secret).register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0), shareable(i=1)], timeout=0.5)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert [rcs(r) for r in producer.rounds] == [{"site": "TIMEOUT"}, {"site": "TIMEOUT"}]
    assert not any(r["site"].get_header(ReservedHeaderKey.SESSION_ENDED) for r in producer.rounds)


def test_a_signed_end_notice_with_an_altered_return_code_is_ignored(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The return code of an ``end`` reaches ``finalize``: with a secret, it must be signed."""
    _tampering(monkeypatch, "end", rc=ReturnCode.EXECUTION_EXCEPTION)
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    factory = RecordingFactory()
    site = make_engine(conn, "site", secret=secret, config=EngineConfig(idle_timeout=0.5))
    site.register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0)], timeout=1)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TIMEOUT  # the forged end was refused; the sender went


def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10.0) -> None:
    wait_for(
        lambda: any(text in r.getMessage() for r in caplog.records),
        f"a log line with {text!r}",
        timeout,
    )


def test_a_signed_object_copied_into_another_cells_mailbox_is_ignored(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whoever can write to Redis copies a genuine signed object meant for ``a`` to ``b``."""
    original = Engine._post

    def copied(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "data":
            assert post(conn, [conn.keys.mailbox("b")], fields) == [True]
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", copied)
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    meant, other = RecordingFactory(), RecordingFactory()
    make_engine(conn, "a", secret=secret).register_stream_processing("c", "t", meant)
    make_engine(conn, "b", secret=secret).register_stream_processing("c", "t", other)
    producer = ListProducer([shareable(i=0), shareable(i=1)])
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        assert server.stream_objects("c", "t", {}, ["a"], producer, FLContext())[0] == "OK"
        _wait_for_log(caplog, "is addressed to ('a',), not 'b'")
    assert [rcs(r) for r in producer.rounds] == [{"a": "OK"}, {"a": "OK"}]
    assert [o["i"] for o in meant.wait_ended(1)[0].consumed] == [0, 1]
    assert other.sessions == []


def test_a_first_object_replayed_to_a_restarted_receiver_starts_no_session(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A receiver that restarted has forgotten the sessions it ended: a signed copy of an
    old session's object 0 must not start that session again."""
    captured: list[dict[bytes, Any]] = []
    original = Engine._post

    def recording(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "data" and env.seq == 0:
            captured.append(dict(fields))
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", recording)
    secret = b"s3cret"
    server = make_engine(conn, "server", secret=secret)
    before = RecordingFactory()
    site = make_engine(conn, "site", secret=secret)
    site.register_stream_processing("c", "t", before)
    assert (
        server.stream_objects("c", "t", {}, ["site"], ListProducer([shareable(i=0)]), FLContext())[
            0
        ]
        == "OK"
    )
    before.wait_ended(1)
    site.shutdown_streamer()
    site.cell.close()  # the receiver is gone (a live cell of that name would still receive)
    # Clocks in step: a start sent before the new engine began is not new to it.
    config = EngineConfig(inline_limit=64 * 1024, close_timeout=5, max_clock_skew=0)
    after = RecordingFactory()
    make_engine(conn, "site", secret=secret, config=config).register_stream_processing(
        "c", "t", after
    )
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        assert post(conn, [conn.keys.mailbox("site")], captured[0]) == [True]
        _wait_for_log(caplog, "refused as a replayed or overdue start")
    assert after.sessions == []
    assert len(before.sessions) == 1
    # A new session from the same sender still starts.
    producer = ListProducer([shareable(i=1)])
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert [o["i"] for o in after.wait_ended(1)[0].consumed] == [1]


def test_a_mailbox_overwritten_by_another_type_is_replaced_and_logged(
    real_conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, the engine retried its read forever (WRONGTYPE) until someone deleted the key.
    # Real Redis only: fakeredis's XREADGROUP fails on a string key with an AttributeError.
    conn = real_conn
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    key = conn.keys.mailbox("site")
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        conn.client.delete(key)
        conn.client.set(key, b"not a stream")
        _wait_for_log(caplog, "held a string, not a stream")
        _wait_for_log(caplog, "recreating it")
    # The line is logged just before the mailbox is created again: wait for the stream.
    wait_for(lambda: conn.client.type(key) in (b"stream", "stream"), "the new mailbox")
    producer = ListProducer([shareable(i=0)])
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert rcs(producer.rounds[0]) == {"site": "OK"}
    assert [o["i"] for o in factory.wait_ended(1)[0].consumed] == [0]


def test_a_reply_mailbox_overwritten_mid_stream_is_replaced_and_the_stream_ends_ok(
    real_conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Every later round waited its whole timeout and the stream ended TIMEOUT, although
    each target consumed every object: the sender's reply key was never repaired."""
    conn = real_conn
    server = make_engine(conn, "server", config=EngineConfig(resend_after=0.2))
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)

    class Overwrites(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            if len(self.rounds) == 1:
                (key,) = conn.client.keys(conn.keys.replies("server", "*"))
                conn.client.set(key, b"garbage")
            return super().produce(stream_ctx, fl_ctx)

    producer = Overwrites([shareable(i=i) for i in range(4)], timeout=10)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rc == ReturnCode.OK
    assert [rcs(r) for r in producer.rounds] == [{"site": "OK"}] * 4
    assert time.monotonic() - started < 10  # no round waited out its timeout
    assert any("held a string, not a stream" in r.getMessage() for r in caplog.records)
    assert [o["i"] for o in factory.wait_ended(1)[0].consumed] == [0, 1, 2, 3]

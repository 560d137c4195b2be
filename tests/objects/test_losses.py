"""Lost objects, busy sessions, vanished targets, closed connections and failed starts.

Each test pins a defect found by probing from outside: a receiver told OK after it lost
objects, one slow consumer holding every worker, a shut-down target reported as a
timeout, an error naming the wrong key, a shutdown that raised on a closed connection,
a failed constructor that left a reader-less mailbox, target names checked too late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framework.cell import StreamCell
from framework.connection import RedisConnection
from framework.exceptions import ClosedError, ConfigurationError
from framework.objects import (
    EngineConfig,
    FLContext,
    ReservedHeaderKey,
    ReturnCode,
    Shareable,
    Signal,
)
from framework.objects import receiver as receiver_module
from framework.objects.engine import RedisStreamableEngine as Engine
from framework.objects.envelope import Envelope
from tests.cell.helpers import SMALL
from tests.objects.conftest import EngineFactory
from tests.objects.helpers import ListProducer, RecordingFactory, shareable, wait_for
from tests.stream.faults import RedisProcess

#: Bounds every wait of these tests.
PATIENCE = 20.0


def rcs(round_: dict[str, Shareable]) -> dict[str, str]:
    return {target: reply.get_return_code() for target, reply in round_.items()}


def error_of(reply: Shareable) -> str:
    return str(reply.get_header(ReservedHeaderKey.ERROR))


def _losing(monkeypatch: pytest.MonkeyPatch, lost: set[int]) -> None:
    """Objects numbered in ``lost`` vanish on the way (every copy), as in a Redis failure."""
    original = Engine._post

    def lossy(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "data" and env.seq in lost:
            return [True] * len(keys)
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", lossy)


# -- 2: a receiver that lost objects never finalizes with OK ---------------------------------


def test_a_session_with_a_gap_finalizes_with_an_error_not_ok(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects 2 and 3 of 5 are lost: the consumer and stream_done_cb hear BAD_REQUEST_DATA."""
    _losing(monkeypatch, {2, 3})
    config = EngineConfig(inline_limit=64 * 1024, resend_after=0.1)
    server = make_engine(conn, "server", config=config)
    factory = RecordingFactory()
    done: list[str] = []
    site = make_engine(conn, "site")
    site.register_stream_processing("c", "t", factory, lambda ctx, fl: done.append(ctx["__RC__"]))
    producer = ListProducer([shareable(i=i) for i in range(5)], timeout=0.5)
    # The sender learns it too: its end is not confirmed as OK.
    rc = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0]
    assert rc == ReturnCode.BAD_REQUEST_DATA
    assert rcs(producer.rounds[4]) == {"site": ReturnCode.BAD_REQUEST_DATA}
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1]
    assert session.rc == ReturnCode.BAD_REQUEST_DATA
    assert done == [ReturnCode.BAD_REQUEST_DATA]


def test_a_lost_last_object_finalizes_with_an_error_naming_it(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No later object reveals the gap: the end notice's count of objects sent does."""
    _losing(monkeypatch, {2})
    server = make_engine(conn, "server", config=EngineConfig(resend_after=0.1))
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(3)], timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.BAD_REQUEST_DATA
    assert any("objects 2..2 of the 3 sent" in r.getMessage() for r in caplog.records)


def test_a_process_replies_result_ends_with_ok_when_nothing_was_lost(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """The end notice counts the objects sent the same way whichever way the loop ends."""
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(3)], result_at=2, result="r")
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext()) == ("OK", "r")
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.OK


@pytest.fixture
def own_redis(tmp_path: Path, require_redis_server: None) -> Iterator[RedisProcess]:
    """A private redis-server whose memory limit a test may change."""
    server = RedisProcess(tmp_path).start()
    try:
        yield server
    finally:
        server.close()


def test_objects_refused_by_a_full_redis_finalize_the_receiver_with_an_error(
    own_redis: RedisProcess, make_engine: EngineFactory
) -> None:
    """Redis refuses writes (maxmemory) while object 1 is sent: never OK at the receiver.

    The sender's error names the write to the target's mailbox, not its reply mailbox.
    """
    with RedisConnection.from_url(own_redis.url) as conn, own_redis.admin() as admin:
        server = make_engine(conn, "server")
        factory = RecordingFactory()
        make_engine(conn, "site").register_stream_processing("c", "t", factory)

        class FillsRedis(ListProducer):
            def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
                if len(self.rounds) == 1:
                    admin.config_set("maxmemory-policy", "noeviction")
                    admin.config_set("maxmemory", 1)
                if len(self.rounds) == 2:
                    admin.config_set("maxmemory", 0)
                return super().produce(stream_ctx, fl_ctx)

        producer = FillsRedis([shareable(i=i) for i in range(3)], timeout=3)
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
        assert rcs(producer.rounds[1]) == {"site": ReturnCode.COMMUNICATION_ERROR}
        error = error_of(producer.rounds[1]["site"])
        assert conn.keys.mailbox("site") in error
        assert ":replies:" not in error
        (session,) = factory.wait_ended(1)
        assert [o["i"] for o in session.consumed] == [0]
        assert session.rc == ReturnCode.BAD_REQUEST_DATA


# -- 5: errors name the key that failed -----------------------------------------------------


def test_a_failed_write_to_the_targets_mailbox_names_that_mailbox(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """WRONGTYPE on the target's mailbox: the error names it, not the sender's replies."""
    server = make_engine(conn, "server")
    conn.client.set(conn.keys.mailbox("site"), b"not a stream")
    producer = ListProducer([shareable(i=0)], timeout=2)
    server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    error = error_of(producer.rounds[0]["site"])
    assert f"post to mailbox {conn.keys.mailbox('site')!r}" in error
    assert ":replies:" not in error


# -- 3: a busy session holds no worker but its own ------------------------------------------


def test_a_slow_consumer_does_not_starve_other_sessions(
    conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Resends of the object after a slow one would each hold a worker: other streams go on."""
    caplog.set_level(logging.INFO, logger="framework.objects.sending")
    gate = threading.Event()
    fast = EngineConfig(inline_limit=64 * 1024, resend_after=0.05)
    slow_sender = make_engine(conn, "slow-server", config=fast)
    quick_sender = make_engine(conn, "quick-server")
    slow, quick = RecordingFactory(gate=gate), RecordingFactory()
    site = make_engine(conn, "site", config=EngineConfig(inline_limit=64 * 1024, workers=2))
    site.register_stream_processing("c", "slow", slow)
    site.register_stream_processing("c", "quick", quick)

    class GivesUpOnTheFirst(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            return obj, (0.2 if not self.rounds else PATIENCE)

    slow_producer = GivesUpOnTheFirst([shareable(i=0, sleep=1), shareable(i=1)])
    thread = threading.Thread(
        target=slow_sender.stream_objects,
        args=("c", "slow", {}, ["site"], slow_producer, FLContext()),
    )
    thread.start()
    try:
        # Object 1 came while object 0 is consumed, and was sent again: on the old code
        # both workers now wait for the session.
        wait_for(lambda: _logged(caplog, "Sending object 1 of stream"), "resends of object 1")
        producer = ListProducer([shareable(i=0)], timeout=3)
        quick_sender.stream_objects("c", "quick", {}, ["site"], producer, FLContext())
        assert rcs(producer.rounds[0]) == {"site": ReturnCode.OK}
    finally:
        gate.set()
        thread.join(PATIENCE)
    assert [rcs(r) for r in slow_producer.rounds] == [{"site": "TIMEOUT"}, {"site": "OK"}]
    (session,) = slow.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1]
    assert session.rc == ReturnCode.OK


#: Objects larger than the engines' inline limit travel as byte streams: never sent again.
BIG = 200_000
BYTE_STREAMS = EngineConfig(inline_limit=64 * 1024)


def _gated_stream(
    conn: RedisConnection, make_engine: EngineFactory, producer: ListProducer
) -> tuple[threading.Event, RecordingFactory, threading.Thread, list[Any]]:
    """``producer``'s stream to a site whose consumer waits at objects with "sleep"."""
    gate = threading.Event()
    server = make_engine(conn, "server", config=BYTE_STREAMS)
    factory = RecordingFactory(gate=gate)
    make_engine(conn, "site", config=BYTE_STREAMS).register_stream_processing("c", "t", factory)
    out: list[Any] = []

    def run() -> None:
        out.append(server.stream_objects("c", "t", {}, ["site"], producer, FLContext()))

    thread = threading.Thread(target=run)
    thread.start()
    return gate, factory, thread, out


def test_a_byte_stream_object_that_comes_while_consume_runs_is_kept_and_applied(
    conn: RedisConnection, make_engine: EngineFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A mailbox message is sent again; a byte stream is not: the receiver keeps it."""
    caplog.set_level(logging.INFO, logger="framework.objects.receiver")

    class GivesUpOnTheFirst(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            return obj, (0.3 if not self.rounds else 5)

    objects = [shareable(i=0, sleep=1), shareable(i=1, big=b"x" * BIG), shareable(i=2)]
    producer = GivesUpOnTheFirst(objects)
    gate, factory, thread, out = _gated_stream(conn, make_engine, producer)
    try:
        wait_for(lambda: _logged(caplog, "session is busy: kept"), "object 1 to be kept")
    finally:
        gate.set()
        thread.join(PATIENCE)
    assert [rcs(r) for r in producer.rounds] == [
        {"site": "TIMEOUT"},  # object 0's consume outlasted its timeout
        {"site": "OK"},
        {"site": "OK"},
    ]
    assert out == [("OK", None)]
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1, 2]
    assert session.rc == ReturnCode.OK


def test_objects_beyond_what_a_busy_session_keeps_are_reported_lost(
    conn: RedisConnection,
    make_engine: EngineFactory,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(receiver_module, "MAX_HELD", 1)
    opened = threading.Event()

    class OpensTheGateAtTheLast(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            if len(self.rounds) == 3:
                opened.set()  # objects 1 and 2 came while object 0 was consumed
            return obj, (1 if len(self.rounds) < 3 else 5)

    big = [shareable(i=i, big=b"x" * BIG) for i in (1, 2)]
    producer = OpensTheGateAtTheLast([shareable(i=0, sleep=1), *big, shareable(i=3)])
    gate, factory, thread, out = _gated_stream(conn, make_engine, producer)
    try:
        opened.wait(PATIENCE)
    finally:
        gate.set()
        thread.join(PATIENCE)
    assert _logged(caplog, "1 objects of its session already wait for its consumer")
    assert [rcs(r) for r in producer.rounds] == [
        {"site": "TIMEOUT"},
        {"site": "TIMEOUT"},  # kept: applied after its round ended
        {"site": "TIMEOUT"},  # dropped
        {"site": "BAD_REQUEST_DATA"},  # "Sequence gap: expected object 2, got 3"
    ]
    assert out == [(ReturnCode.BAD_REQUEST_DATA, None)]
    (session,) = factory.wait_ended(1)
    assert [o["i"] for o in session.consumed] == [0, 1]
    assert session.rc == ReturnCode.BAD_REQUEST_DATA


def test_an_abort_that_comes_while_consume_runs_is_applied_when_it_returns(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """The abort holds no worker while it waits for consume; it still ends the session."""
    gate = threading.Event()
    server = make_engine(conn, "server")
    factory = RecordingFactory(gate=gate)
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    signal_ctx = FLContext()
    signal = Signal()
    signal_ctx.set_run_abort_signal(signal)
    producer = ListProducer([shareable(i=0, sleep=1)], timeout=PATIENCE)
    thread = threading.Thread(
        target=server.stream_objects, args=("c", "t", {}, ["site"], producer, signal_ctx)
    )
    thread.start()
    factory.new_session.wait(PATIENCE)
    (session,) = factory.sessions
    wait_for(lambda: "consume" in session.events, "consume to start")
    signal.trigger("stop")
    thread.join(PATIENCE)
    gate.set()
    factory.wait_ended(1)
    assert session.rc == ReturnCode.TASK_ABORTED
    assert session.events.count("finalize") == 1


# -- 4: a target that shut down is told apart from a silent one -----------------------------


def test_a_target_that_shut_down_mid_stream_gets_communication_error_not_timeout(
    conn: RedisConnection,
    make_engine: EngineFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Object 1 is lost as its target shuts down: the resend finds no mailbox, at once."""
    server = make_engine(conn, "server", config=EngineConfig(resend_after=0.05))
    site = make_engine(conn, "site")
    site.register_stream_processing("c", "t", RecordingFactory())
    original = Engine._post

    def shuts_down(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "data" and env.seq == 1 and not site.stopping():
            site.shutdown_streamer()
            return [True] * len(keys)  # written just before the mailbox went
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", shuts_down)
    producer = ListProducer([shareable(i=0), shareable(i=1)], timeout=PATIENCE)
    with caplog.at_level(logging.WARNING, logger="framework.objects"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rcs(producer.rounds[1]) == {"site": ReturnCode.COMMUNICATION_ERROR}
    assert "no mailbox" in error_of(producer.rounds[1]["site"])
    # Neither the object nor the end notice waited out its timeout.
    assert not any("sent no reply" in r.getMessage() for r in caplog.records)


# -- 1: shutdown after the connection closed ------------------------------------------------


def test_shutdown_after_the_connection_closed_finalizes_every_session_once(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    """The application closes the site's connection first: shutdown still does its job."""
    server = make_engine(conn, "server")
    site_conn = RedisConnection(client=conn.client)  # closing it leaves the test's open
    cell = StreamCell(site_conn, "site", config=SMALL)
    try:
        site = Engine(cell, config=EngineConfig(close_timeout=2))
        factory = RecordingFactory()
        site.register_stream_processing("c", "t", factory, stream_done_cb=factory.done_cb)
        gate = threading.Event()

        class Pauses(ListProducer):
            def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
                if self.rounds:
                    gate.wait(PATIENCE)  # the session stays open at the site meanwhile
                return super().produce(stream_ctx, fl_ctx)

        producer = Pauses([shareable(i=0)], timeout=5)
        thread = threading.Thread(
            target=server.stream_objects, args=("c", "t", {}, ["site"], producer, FLContext())
        )
        thread.start()
        wait_for(lambda: producer.rounds, "object 0's reply")
        site_conn.close()
        site.shutdown_streamer()
        site.shutdown_streamer()
        (session,) = factory.wait_ended(1)
        assert session.rc == ReturnCode.TASK_ABORTED
        assert session.events == ["consume", "finalize", "done:None", "return"]
        assert not any(t.name.startswith("fw-obj-site") for t in threading.enumerate())
        gate.set()
        thread.join(PATIENCE)
    finally:
        cell.close()


# -- 7: a failed constructor leaves nothing behind ------------------------------------------


def test_an_engine_on_a_closed_cell_leaves_no_mailbox_and_senders_hear_at_once(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    cell = StreamCell(conn, "ghost", config=SMALL)
    cell.close()
    with pytest.raises(ClosedError):
        Engine(cell)
    assert not conn.client.exists(conn.keys.mailbox("ghost"))
    producer = ListProducer([shareable(i=0)], timeout=PATIENCE)
    make_engine(conn, "server").stream_objects("c", "t", {}, ["ghost"], producer, FLContext())
    assert rcs(producer.rounds[0]) == {"ghost": ReturnCode.COMMUNICATION_ERROR}


# -- 6: target names are checked before produce ---------------------------------------------


@pytest.mark.parametrize("target", ["a{b", "a}b"])
def test_a_target_name_the_key_schema_refuses_fails_before_produce(
    fake_conn: RedisConnection, make_engine: EngineFactory, target: str
) -> None:
    server = make_engine(fake_conn, "server")
    producer = ListProducer([shareable(i=0)])
    produced: list[int] = []
    original = producer.produce

    def counting(stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        produced.append(1)
        return original(stream_ctx, fl_ctx)

    producer.produce = counting  # type: ignore[method-assign]
    with pytest.raises(ConfigurationError, match="hash tags"):
        server.stream_objects("c", "t", {}, ["server", target], producer, FLContext())
    assert produced == []


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def test_an_unconfirmed_end_is_not_reported_as_ok(
    conn: RedisConnection, make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every end notice is lost: stream_objects returns TIMEOUT (with the result), not OK."""
    original = Engine._post

    def losing_ends(self: Engine, env: Envelope, keys: list[str], fields: Any) -> list[bool]:
        if env.kind == "end":
            return [True] * len(keys)
        return original(self, env, keys, fields)

    monkeypatch.setattr(Engine, "_post", losing_ends)
    server = make_engine(conn, "server", config=EngineConfig(resend_after=0.1))
    factory = RecordingFactory()
    site = make_engine(conn, "site")
    site.register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(3)], timeout=0.5)
    rc, result = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert (rc, result) == (ReturnCode.TIMEOUT, None)
    assert [rcs(r) for r in producer.rounds] == [{"site": ReturnCode.OK}] * 3


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_a_reply_made_while_redis_restarts_still_reaches_the_sender(
    tmp_path: Path, require_redis_server: None, make_engine: EngineFactory, persistent: bool
) -> None:
    """An object that came as a byte stream is not sent again: a reply that Redis failed
    (down for a second as consume returned) was dropped, and the sender waited out its
    timeout for a reply that had been made, reporting TIMEOUT."""
    server_redis = RedisProcess(tmp_path, aof=persistent).start()
    gate = threading.Event()
    try:
        with RedisConnection.from_url(server_redis.url) as conn:
            server = make_engine(conn, "server")
            factory = RecordingFactory(gate=gate)
            make_engine(conn, "site").register_stream_processing("c", "t", factory)

            def restart_then_let_consume_return() -> None:
                wait_for(lambda: factory.sessions, what="the object to be consumed")
                server_redis.kill()
                gate.set()  # consume returns, and its reply fails, while Redis is down
                time.sleep(1.0)
                server_redis.start()

            thread = threading.Thread(target=restart_then_let_consume_return)
            thread.start()
            big = np.ones(64 * 1024)  # 512 KB: a byte stream (inline limit 64 KB)
            producer = ListProducer([shareable(w=big, sleep=1)], timeout=20)  # held by the gate
            started = time.monotonic()
            server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
            thread.join(30)
            assert rcs(producer.rounds[0]) == {"site": ReturnCode.OK}
            assert time.monotonic() - started < 15
    finally:
        gate.set()
        server_redis.close()

"""The object protocol end to end, in one process, on fakeredis and a real redis-server."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from framework.connection import RedisConnection
from framework.exceptions import ClosedError, ConfigurationError, SerializationError
from framework.objects import (
    EngineConfig,
    FLContext,
    ReservedHeaderKey,
    ReturnCode,
    Signal,
    StreamContextKey,
    make_reply,
)
from tests.objects.conftest import EngineFactory, server_and_site
from tests.objects.helpers import ListProducer, RecordingFactory, shareable


def rcs(round_: dict[str, Any]) -> dict[str, str]:
    return {target: reply.get_return_code() for target, reply in round_.items()}


def test_normal_end_finalizes_every_target_once_with_rc_ok(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    factories = {name: RecordingFactory() for name in ("site-1", "site-2")}
    for name, factory in factories.items():
        make_engine(conn, name).register_stream_processing(
            "app", "weights", factory, factory.done_cb, tag=name
        )
    producer = ListProducer([shareable(round=i) for i in range(3)])
    rc, result = server.stream_objects(
        "app", "weights", {"job": "j1"}, ["site-1", "site-2"], producer, FLContext()
    )
    assert (rc, result) == (ReturnCode.OK, None)
    assert [rcs(r) for r in producer.rounds] == [{"site-1": "OK", "site-2": "OK"}] * 3
    assert [r["site-1"]["n"] for r in producer.rounds] == [1, 2, 3]
    for name, factory in factories.items():
        (session,) = factory.wait_ended(1)
        assert [s["round"] for s in session.consumed] == [0, 1, 2]
        assert session.events == ["consume"] * 3 + ["finalize", f"done:{name}", "return"]
        assert session.rc == ReturnCode.OK
        assert session.peer == "server"
        assert session.ctx[StreamContextKey.CHANNEL] == "app"
        assert session.ctx[StreamContextKey.TOPIC] == "weights"
        assert session.ctx["job"] == "j1"


@pytest.mark.parametrize("timeout", [5, 5.0], ids=["int", "float"])
def test_integer_and_float_timeouts_are_accepted(
    conn: RedisConnection, make_engine: EngineFactory, timeout: float
) -> None:
    server, _ = server_and_site(make_engine, conn)
    producer = ListProducer([shareable(x=1)], timeout=timeout)
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext()) == ("OK", None)
    assert rcs(producer.rounds[0]) == {"site": "OK"}


@pytest.mark.parametrize(
    "timeout",
    [0, "5", True, float("nan"), float("inf"), pytest.param(10**400, id="int-beyond-float")],
)
def test_bad_timeouts_raise_naming_the_producer_and_receivers_are_told(
    conn: RedisConnection, make_engine: EngineFactory, timeout: Any
) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)

    class SecondTimeoutBad(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, Any]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            return obj, (5 if not self.rounds else timeout)

    producer = SecondTimeoutBad([shareable(x=1), shareable(x=2)])
    with pytest.raises(ConfigurationError, match=r"SecondTimeoutBad\.produce returned timeout"):
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TASK_ABORTED
    assert len(session.consumed) == 1


@pytest.mark.parametrize("result", [0, {}, False], ids=repr)
def test_a_falsy_result_is_a_result(
    conn: RedisConnection, make_engine: EngineFactory, result: Any
) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=i) for i in range(5)], result_at=2, result=result)
    rc, got = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rc == ReturnCode.OK
    assert got == result
    assert type(got) is type(result)
    assert len(producer.rounds) == 2
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.OK  # a result ends the stream normally
    assert len(session.consumed) == 2


def test_consume_raising_replies_execution_exception_and_still_finalizes(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    bad, good = RecordingFactory(), RecordingFactory()
    make_engine(conn, "bad").register_stream_processing("c", "t", bad)
    make_engine(conn, "good").register_stream_processing("c", "t", good)

    class RaiseOnBad(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, timeout = super().produce(stream_ctx, fl_ctx)
            return obj, timeout

    objects = [shareable(i=0), shareable(i=1, **{"raise": 1}), shareable(i=2)]
    producer = RaiseOnBad(objects)
    rc, _ = server.stream_objects("c", "t", {}, ["bad", "good"], producer, FLContext())
    assert rc == ReturnCode.EXECUTION_EXCEPTION
    assert rcs(producer.rounds[1]) == {"bad": "EXECUTION_EXCEPTION", "good": "EXECUTION_EXCEPTION"}
    assert "consumer exploded" in producer.rounds[1]["bad"].get_header(ReservedHeaderKey.ERROR)
    # Both ended their sessions at object 1; object 2 is not sent to them.
    assert rcs(producer.rounds[2]) == {"bad": "EARLY_TERMINATION", "good": "EARLY_TERMINATION"}
    for factory in (bad, good):
        (session,) = factory.wait_ended(1)
        assert session.rc == ReturnCode.EXECUTION_EXCEPTION
        assert len(session.consumed) == 2
        assert session.events[-2:] == ["finalize", "return"]


@pytest.mark.parametrize(
    ("obj", "ctx", "culprit"),
    [
        ({"weights": 1, "lock": threading.Lock()}, {}, "key 'lock' of its Shareable"),
        ({"weights": 1}, {"job": (i for i in range(2))}, "key 'job' of its stream_ctx"),
    ],
    ids=["shareable", "stream_ctx"],
)
def test_an_unpicklable_object_fails_the_call_naming_the_key(
    conn: RedisConnection,
    make_engine: EngineFactory,
    obj: dict[str, Any],
    ctx: dict[str, Any],
    culprit: str,
) -> None:
    server, factory = server_and_site(make_engine, conn)
    producer = ListProducer([shareable(**obj)])
    with pytest.raises(SerializationError) as raised:
        server.stream_objects("c", "t", ctx, ["site"], producer, FLContext())
    message = str(raised.value)
    assert "seq 0" in message
    assert f"the value of {culprit} cannot be pickled" in message
    assert "type tuple" not in message  # not the internal (object, context) pair
    assert factory.sessions == []


@pytest.mark.parametrize(
    "returned", [None, "reply", make_reply(ReturnCode.OK), (True, make_reply("OK"), 1)], ids=repr
)
def test_consume_returning_no_pair_is_named_as_the_fault(
    conn: RedisConnection, make_engine: EngineFactory, returned: Any
) -> None:
    server, factory = server_and_site(make_engine, conn)
    producer = ListProducer([shareable(i=0), shareable(i=1, **{"return": returned})])
    rc, _ = server.stream_objects("c", "t", {}, ["site"], producer, FLContext())
    assert rcs(producer.rounds[1]) == {"site": "EXECUTION_EXCEPTION"}
    why = producer.rounds[1]["site"].get_header(ReservedHeaderKey.ERROR)
    assert "RecordingConsumer.consume returned" in why
    assert "must return a (continue, reply) pair" in why
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.EXECUTION_EXCEPTION
    assert rc == ReturnCode.EXECUTION_EXCEPTION  # the target failed: not OK


def test_consume_returning_false_ends_that_target_only(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    quitter, stayer = RecordingFactory(), RecordingFactory()
    make_engine(conn, "quitter").register_stream_processing("c", "t", quitter)
    make_engine(conn, "stayer").register_stream_processing("c", "t", stayer)

    class StopQuitterAtOne(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, timeout = super().produce(stream_ctx, fl_ctx)
            if obj is not None and len(self.rounds) == 1:
                obj = shareable(i=1, stop=fl_ctx is not None)
            return obj, timeout

    # Both consumers see "stop" at object 1; only the quitter's factory is the point here,
    # so the stayer's copy is not stopped: the same object goes to both.
    producer = StopQuitterAtOne([shareable(i=i) for i in range(4)])
    server.stream_objects("c", "t", {}, ["quitter"], producer, FLContext())
    assert rcs(producer.rounds[1]) == {"quitter": "OK"}
    assert producer.rounds[1]["quitter"].get_header(ReservedHeaderKey.SESSION_ENDED) is True
    assert rcs(producer.rounds[2]) == {"quitter": "EARLY_TERMINATION"}
    (session,) = quitter.wait_ended(1)
    assert session.rc == ReturnCode.OK
    assert len(session.consumed) == 2


def test_failed_unknown_and_silent_targets_get_error_replies_while_others_go_on(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    gate = threading.Event()
    fast, slow = RecordingFactory(sleeps=False), RecordingFactory(gate=gate)
    make_engine(conn, "fast").register_stream_processing("c", "t", fast)
    make_engine(conn, "slow").register_stream_processing("c", "t", slow)
    make_engine(conn, "no-topic")  # an engine without a factory for c/t
    objects = [shareable(i=0), shareable(i=1, sleep=1), shareable(i=2)]

    class OpensTheGate(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            obj, _ = super().produce(stream_ctx, fl_ctx)
            return obj, (3 if len(self.rounds) == 1 else 20)  # round 2: "slow" times out

        def process_replies(self, replies: Any, stream_ctx: Any, fl_ctx: FLContext) -> Any:
            if self.rounds:  # after the round in which "slow" timed out, it catches up
                gate.set()
            return super().process_replies(replies, stream_ctx, fl_ctx)

    producer = OpensTheGate(objects)
    targets = ["fast", "slow", "ghost", "no-topic"]
    try:
        rc, _ = server.stream_objects("c", "t", {}, targets, producer, FLContext())
    finally:
        gate.set()
    # "ghost" has no engine, so it got nothing (the stream was OK for it before), and
    # "no-topic" ended without a consumer: the stream is not OK; the first one's code.
    assert rc == ReturnCode.COMMUNICATION_ERROR
    first, second, _ = (rcs(r) for r in producer.rounds)
    assert first == {
        "fast": "OK",
        "slow": "OK",
        "ghost": "COMMUNICATION_ERROR",
        "no-topic": "TOPIC_UNKNOWN",
    }
    assert second["slow"] == "TIMEOUT"
    assert second["fast"] == "OK"
    assert second["no-topic"] == "EARLY_TERMINATION"
    assert "No reply within 3.0 s" in producer.rounds[1]["slow"].get_header("__error__")
    assert rcs(producer.rounds[2])["slow"] == "OK"
    assert len(fast.wait_ended(1)[0].consumed) == 3
    assert len(slow.wait_ended(1)[0].consumed) == 3


@pytest.mark.parametrize("targets", [["ghost"], ["site", "ghost"]])
def test_a_target_without_an_engine_fails_the_stream(
    conn: RedisConnection, make_engine: EngineFactory, targets: list[str]
) -> None:
    """Nothing reached "ghost", yet the stream returned OK."""
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(i=0), shareable(i=1)])
    rc, _ = server.stream_objects("c", "t", {}, targets, producer, FLContext())
    assert rc == ReturnCode.COMMUNICATION_ERROR
    assert all(rcs(r)["ghost"] == "COMMUNICATION_ERROR" for r in producer.rounds)
    if "site" in targets:
        assert len(factory.wait_ended(1)[0].consumed) == 2  # the others got everything


def test_no_object_at_all_is_ok_also_without_engines(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    rc, _ = server.stream_objects("c", "t", {}, ["ghost"], ListProducer([]), FLContext())
    assert rc == ReturnCode.OK


def test_abort_signal_stops_the_wait_and_receivers_finalize_aborted(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    abort = Signal()
    fl_ctx = FLContext()
    fl_ctx.set_run_abort_signal(abort)
    producer = ListProducer([shareable(i=0), shareable(i=1, sleep=0.8), shareable(i=2)], 60)
    threading.Timer(0.3, abort.trigger, args=(True,)).start()
    rc, result = server.stream_objects("c", "t", {}, ["site"], producer, fl_ctx)
    assert (rc, result) == (ReturnCode.TASK_ABORTED, None)
    assert len(producer.rounds) == 1  # the round in flight was not judged
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TASK_ABORTED
    assert len(session.consumed) == 2


def test_several_sessions_on_one_channel_and_topic_get_their_own_consumers(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    senders = [make_engine(conn, f"server-{i}") for i in range(2)]
    factory = RecordingFactory()
    make_engine(conn, "site").register_stream_processing("c", "t", factory)
    producers = [ListProducer([shareable(by=i, k=k) for k in range(4)]) for i in range(4)]
    threads = [
        threading.Thread(
            target=senders[i % 2].stream_objects,
            args=("c", "t", {"i": i}, ["site"], producers[i], FLContext()),
        )
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    sessions = factory.wait_ended(4)
    assert sorted(s.ctx["i"] for s in sessions) == [0, 1, 2, 3]
    for session in sessions:
        assert [(o["by"], o["k"]) for o in session.consumed] == [
            (session.ctx["i"], k) for k in range(4)
        ]
        assert session.rc == ReturnCode.OK


def test_large_objects_ride_one_byte_stream_to_every_target(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    factories = [RecordingFactory() for _ in range(2)]
    for i, factory in enumerate(factories):
        make_engine(conn, f"site-{i}").register_stream_processing("c", "t", factory)
    weights = {"w": np.arange(200_000, dtype=np.float32), "b": np.ones((30, 30))}
    producer = ListProducer([shareable(**weights), shareable(small=1)])
    server.stream_objects("c", "t", {}, ["site-0", "site-1"], producer, FLContext())
    assert [rcs(r) for r in producer.rounds] == [{"site-0": "OK", "site-1": "OK"}] * 2
    for factory in factories:
        (session,) = factory.wait_ended(1)
        got = session.consumed[0]
        np.testing.assert_array_equal(got["w"], weights["w"])
        np.testing.assert_array_equal(got["b"], weights["b"])


def test_secure_and_signed_streams(conn: RedisConnection, make_engine: EngineFactory) -> None:
    key, secret = b"k" * 32, b"shared secret"
    server = make_engine(conn, "server", cell_key=key, secret=secret)
    factory = RecordingFactory()
    site = make_engine(conn, "site", cell_key=key, secret=secret)
    site.register_stream_processing("c", "t", factory)
    producer = ListProducer([shareable(x=np.arange(10)), shareable(y="z")])
    assert (
        server.stream_objects("c", "t", {}, ["site"], producer, FLContext(), secure=True)[0] == "OK"
    )
    assert [rcs(r) for r in producer.rounds] == [{"site": "OK"}] * 2
    (session,) = factory.wait_ended(1)
    assert session.consumed[1]["y"] == "z"
    assert session.rc == "OK"


def test_shutdown_finalizes_open_sessions_is_idempotent_and_refuses_new_work(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    factory = RecordingFactory()
    site = make_engine(conn, "site")
    site.register_stream_processing("c", "t", factory)
    gate = threading.Event()

    class Stalls(ListProducer):
        def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
            if self.rounds:
                gate.wait(10)
                return None, 1
            return super().produce(stream_ctx, fl_ctx)

    thread = threading.Thread(
        target=server.stream_objects,
        args=("c", "t", {}, ["site"], Stalls([shareable(i=0)]), FLContext()),
    )
    thread.start()
    factory.new_session.wait(10)
    site.shutdown_streamer()
    site.shutdown_streamer()
    (session,) = factory.wait_ended(1)
    assert session.rc == ReturnCode.TASK_ABORTED
    gate.set()
    thread.join(10)
    with pytest.raises(ClosedError):
        site.register_stream_processing("c", "t", factory)
    with pytest.raises(ClosedError):
        site.stream_objects("c", "t", {}, ["server"], ListProducer([]), FLContext())
    assert not conn.client.exists(conn.keys.mailbox("site"))


def test_a_session_still_consuming_at_shutdown_is_finalized_when_consume_returns(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    gate = threading.Event()
    factory = RecordingFactory(gate=gate)
    site = make_engine(conn, "site", config=EngineConfig(inline_limit=64 * 1024, close_timeout=0.3))
    site.register_stream_processing("c", "t", factory, stream_done_cb=factory.done_cb, tag="x")
    producer = ListProducer([shareable(i=0, sleep=1)], timeout=2)
    thread = threading.Thread(
        target=server.stream_objects, args=("c", "t", {}, ["site"], producer, FLContext())
    )
    thread.start()
    factory.new_session.wait(10)
    (session,) = factory.sessions
    while "consume" not in session.events:
        time.sleep(0.01)
    site.shutdown_streamer()  # gives up waiting for the consume after 0.3 s
    gate.set()  # consume returns
    factory.wait_ended(1, timeout=10)
    assert session.rc == ReturnCode.TASK_ABORTED
    assert session.events == ["consume", "finalize", "done:x", "return"]
    thread.join(20)


def test_bad_arguments_are_named(conn: RedisConnection, make_engine: EngineFactory) -> None:
    server = make_engine(conn, "server")
    with pytest.raises(ConfigurationError, match="list of cell names"):
        server.stream_objects("c", "t", {}, "site", ListProducer([]), FLContext())
    with pytest.raises(ConfigurationError, match="list of cell names"):
        server.stream_objects("c", "t", {}, [], ListProducer([]), FLContext())
    with pytest.raises(ConfigurationError, match="ConsumerFactory"):
        server.register_stream_processing("c", "t", object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a Shareable"):
        server.stream_objects("c", "t", {}, ["x"], ListProducer([{"a": 1}]), FLContext())  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="inline_limit"):
        EngineConfig(inline_limit=-1)


class _Makes(ListProducer):
    """``produce`` returns ``made`` (and records that it was called)."""

    def __init__(self, made: Any) -> None:
        super().__init__([])
        self.made = made
        self.calls = 0

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        self.calls += 1
        return self.made  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"channel": None}, "The channel must be a string"),
        ({"channel": 5}, "The channel must be a string"),
        ({"topic": "x" * 600}, "The topic must be a string of at most 512"),
        ({"targets": [""]}, "A target must be a cell name of 1 to 512"),
        ({"targets": ["x" * 600]}, "A target must be a cell name of 1 to 512"),
        ({"fl_ctx": None}, "fl_ctx must be an FLContext"),
        ({"stream_ctx": [1]}, "stream_ctx must be a dict"),
    ],
    ids=[
        "channel-None",
        "channel-int",
        "long-topic",
        "empty-target",
        "long-target",
        "fl_ctx",
        "ctx",
    ],
)
def test_bad_arguments_fail_at_the_call_before_anything_is_produced(
    conn: RedisConnection, make_engine: EngineFactory, args: dict[str, Any], message: str
) -> None:
    server = make_engine(conn, "server")
    producer = _Makes((shareable(i=0), 1))
    call: dict[str, Any] = {
        "channel": "c",
        "topic": "t",
        "stream_ctx": {},
        "targets": ["site"],
        "producer": producer,
        "fl_ctx": FLContext(),
    }
    with pytest.raises(ConfigurationError, match=message):
        server.stream_objects(**{**call, **args})
    assert producer.calls == 0
    with pytest.raises(ConfigurationError, match="producer must be an ObjectProducer"):
        server.stream_objects(**{**call, "producer": None})
    with pytest.raises(ConfigurationError, match="The channel must be a string"):
        server.register_stream_processing(None, None, RecordingFactory())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "made", [None, shareable(i=0), (shareable(i=0), 1, 2)], ids=["None", "bare", "triple"]
)
def test_produce_returning_no_pair_is_named(
    conn: RedisConnection, make_engine: EngineFactory, made: Any
) -> None:
    server = make_engine(conn, "server")
    with pytest.raises(
        ConfigurationError, match=r"_Makes.produce returned .*\(Shareable, timeout\) pair"
    ):
        server.stream_objects("c", "t", {}, ["site"], _Makes(made), FLContext())


def test_a_numpy_timeout_is_a_number_of_seconds(
    conn: RedisConnection, make_engine: EngineFactory
) -> None:
    server = make_engine(conn, "server")
    make_engine(conn, "site").register_stream_processing("c", "t", RecordingFactory())
    producer = ListProducer([shareable(i=0)], timeout=np.int64(5))  # type: ignore[arg-type]
    assert server.stream_objects("c", "t", {}, ["site"], producer, FLContext())[0] == "OK"
    assert rcs(producer.rounds[0]) == {"site": "OK"}

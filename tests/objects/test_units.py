"""The pure parts of the object protocol: Shareable, context, envelope, sequence logic."""

from __future__ import annotations

import threading

import pytest

from framework.exceptions import BadSignatureError, ConfigurationError, FramingError
from framework.objects import (
    EngineConfig,
    FLContext,
    ReservedHeaderKey,
    ReturnCode,
    Shareable,
    Signal,
    StreamContextKey,
    make_reply,
)
from framework.objects.envelope import Envelope, decode_envelope, open_payload, seal_payload
from framework.objects.receiver import Receiver, Registration
from framework.objects.session import ReplySlots, SeqTracker, Tombstones, Verdict
from tests.objects.helpers import RecordingFactory


def test_shareable_keeps_nvflare_s_layout() -> None:
    s = Shareable({"w": 1})
    assert s["__headers__"] == {}
    assert s.get_return_code() == ReturnCode.OK
    s.set_return_code(ReturnCode.TIMEOUT)
    s.set_header("k", "v")
    assert s["__headers__"] == {"__rc__": "TIMEOUT", "k": "v"}
    assert s.get_header("missing", 7) == 7
    assert isinstance(s, dict)
    reply = make_reply(ReturnCode.ERROR, {"a": 1})
    assert reply.get_return_code() == "ERROR"
    assert reply.get_header("a") == 1
    s["__headers__"] = "broken"
    with pytest.raises(ValueError, match="must be a dict"):
        s.get_header("k")


def test_a_copied_shareable_keeps_its_headers_and_return_code() -> None:
    reply = make_reply(ReturnCode.EXECUTION_EXCEPTION, {"why": "boom"})
    reply["x"] = 1
    copy = Shareable(reply)
    assert copy.get_return_code() == ReturnCode.EXECUTION_EXCEPTION
    assert copy.get_header("why") == "boom"
    assert copy["x"] == 1
    copy.set_header("why", "other")
    assert reply.get_header("why") == "boom"  # the copy has its own headers
    assert Shareable({"__headers__": "broken", "y": 2})["__headers__"] == {}


def test_stream_context_keys_and_return_codes_are_nvflare_s() -> None:
    assert (StreamContextKey.CHANNEL, StreamContextKey.TOPIC, StreamContextKey.RC) == (
        "__channel__",
        "__topic__",
        "__RC__",
    )
    # Every name of NVFlare 2.9's ReturnCode (ported code that used one failed on 14).
    nvflare_2_9 = [
        "OK",
        "BAD_PEER_CONTEXT",
        "BAD_REQUEST_DATA",
        "BAD_TASK_DATA",
        "COMMUNICATION_ERROR",
        "TIMEOUT",
        "ERROR",
        "EXECUTION_EXCEPTION",
        "EXECUTION_RESULT_ERROR",
        "HANDLER_EXCEPTION",
        "MISSING_PEER_CONTEXT",
        "RUN_MISMATCH",
        "TASK_ABORTED",
        "TASK_DATA_FILTER_ERROR",
        "TASK_RESULT_FILTER_ERROR",
        "TASK_UNKNOWN",
        "TASK_UNSUPPORTED",
        "TOPIC_UNKNOWN",
        "MODEL_UNRECOGNIZED",
        "VALIDATE_TYPE_UNKNOWN",
        "EMPTY_RESULT",
        "UNSAFE_JOB",
        "EARLY_TERMINATION",
        "SERVER_NOT_READY",
        "SERVICE_UNAVAILABLE",
    ]
    assert len(nvflare_2_9) == 25
    for name in nvflare_2_9:
        assert getattr(ReturnCode, name) == name


def test_signal_and_fl_context() -> None:
    parent = Signal()
    child = Signal(parent)
    assert not child.triggered
    parent.trigger("stop")
    assert child.triggered
    assert child.wait(0)
    assert parent.value == "stop"
    parent.reset()
    assert not parent.triggered
    assert parent.trigger_time is None
    threading.Timer(0.05, parent.trigger, args=(1,)).start()
    assert parent.wait(10)
    ctx = FLContext()
    assert ctx.get_run_abort_signal() is None
    ctx.set_run_abort_signal(parent)
    assert ctx.get_run_abort_signal() is parent
    assert ctx.set_prop("a", 1, private=False)
    ctx.set_prop("b", 2)
    assert ctx.get_all_public_props() == {"a": 1}
    ctx.remove_prop("a")
    assert ctx.get_prop("a", "gone") == "gone"


def test_envelope_round_trip_and_bad_envelopes() -> None:
    env = Envelope(
        kind="data",
        tx="ab12",
        seq=3,
        origin="sérveur",
        to=("a", "b"),
        at=1.5,
        channel="c",
        topic="t",
    )
    assert decode_envelope(env.model_dump_json(), "x") == env
    assert decode_envelope(env.model_dump(mode="json"), "x") == env
    for raw in (None, b"{", b'{"v": 1}', b'{"v": 3, "kind": "data", "tx": "XY", "seq": 0}'):
        with pytest.raises(FramingError, match="envelope"):
            decode_envelope(raw, "test entry")


def test_payload_is_bound_to_its_envelope_and_signed() -> None:
    env = Envelope(kind="data", tx="ab", seq=1, origin="s", to=("t",), at=1.0)
    other = env.model_copy(update={"seq": 2})
    data = seal_payload(env, {"x": 1}, b"key").join()
    assert open_payload(env, data, b"key", True) == {"x": 1}
    with pytest.raises(BadSignatureError):
        open_payload(env, data, b"other", True)
    with pytest.raises(Exception, match="belongs to another message"):
        open_payload(other, data, b"key", True)


def test_seq_tracker_applies_once_and_reports_gaps() -> None:
    seq = SeqTracker()
    assert seq.verdict(0) is Verdict.APPLY
    seq.applied(make_reply("OK"))
    assert seq.verdict(0) is Verdict.RETRY
    assert seq.verdict(1) is Verdict.APPLY
    assert seq.verdict(3) is Verdict.GAP
    assert "expected object 1, got 3" in seq.gap_reply(3).get_header(ReservedHeaderKey.ERROR)
    seq.applied(make_reply("OK"))
    seq.applied(make_reply("OK"))
    assert seq.verdict(0) is Verdict.STALE


def test_reply_slots_take_the_first_matching_reply() -> None:
    slots = ReplySlots(2, ["a", "b"])
    assert not slots.fill("a", 1, make_reply("OK"))  # another object's reply
    assert not slots.fill("z", 2, make_reply("OK"))  # not a target
    assert slots.fill("a", 2, make_reply("OK"))
    assert not slots.fill("a", 2, make_reply("ERROR"))  # a duplicate
    assert slots.missing() == ["b"]
    slots.fail_missing(ReturnCode.TIMEOUT, "late")
    assert slots.complete()
    assert {t: r.get_return_code() for t, r in slots.result().items()} == {
        "a": "OK",
        "b": "TIMEOUT",
    }


def test_tombstones_answer_late_copies() -> None:
    tombs = Tombstones(limit=1)
    reply = make_reply("OK")
    tombs.add(("s", "t1"), 4, reply, "OK", 10.0)
    assert tombs.answer(("s", "t1"), 4) is reply
    late = tombs.answer(("s", "t1"), 5)
    assert late is not None
    assert late.get_return_code() == ReturnCode.EARLY_TERMINATION
    tombs.add(("s", "t2"), 0, None, "OK", 20.0)
    assert ("s", "t1") not in tombs  # the oldest is forgotten
    assert tombs.answer(("s", "t9"), 0) is None


def test_tombstones_know_which_session_starts_they_may_have_forgotten() -> None:
    tombs = Tombstones(limit=2, floor=5.0)
    assert tombs.forgotten("s", 4.9)  # sent before the receiver started
    assert not tombs.forgotten("s", 5.0)
    tombs.add(("s", "a"), 0, None, "OK", 30.0)
    tombs.add(("s", "b"), 0, None, "OK", 10.0)
    assert not tombs.forgotten("s", 12.0)  # remembered sessions answer for themselves
    tombs.add(("s", "c"), 0, None, "OK", 40.0)  # forgets "a", started at 30
    assert tombs.forgotten("s", 30.0)
    assert tombs.forgotten("s", 12.0)
    assert not tombs.forgotten("s", 30.5)
    assert not tombs.forgotten("other", 12.0)  # another sender's clock: not compared
    tombs.add(("s", "d"), 0, None, "OK", 50.0)  # forgets "b" (10): the horizon stays 30
    assert tombs.forgotten("s", 30.0)
    tombs.add(("o1", "e"), 0, None, "OK", 60.0)  # forgets "c": 40
    tombs.add(("o2", "f"), 0, None, "OK", 70.0)  # forgets "d": 50
    tombs.add(("o3", "g"), 0, None, "OK", 80.0)  # forgets "e": "o1" at 60
    # Forgets "f": "o2" at 70, one sender too many; the oldest, "s" (50), becomes the floor.
    tombs.add(("o4", "h"), 0, None, "OK", 90.0)
    assert tombs.forgotten("s", 49.0)
    assert tombs.forgotten("o4", 49.0)
    assert not tombs.forgotten("o4", 51.0)
    assert tombs.forgotten("o2", 70.0)
    assert tombs.forgotten("o1", 60.0)


def test_a_first_object_that_is_old_or_forgotten_starts_no_session() -> None:
    wall = [1000.0]
    replies: list[tuple[int, str, str]] = []

    def reply(env: Envelope, answer: Shareable, ended: bool) -> None:
        replies.append(
            (env.seq, answer.get_return_code(), answer.get_header(ReservedHeaderKey.ERROR, ""))
        )

    receiver = Receiver("site", reply, idle_timeout=10, max_clock_skew=5, wall=lambda: wall[0])
    factory = RecordingFactory()
    receiver.register("c", "t", Registration(factory))

    def first(tx: str, at: float, timeout: float | None = 10.0) -> Envelope:
        return Envelope(
            kind="data",
            tx=tx,
            seq=0,
            origin="server",
            to=("site",),
            at=at,
            channel="c",
            topic="t",
            timeout=timeout,
        )

    def load() -> tuple[Shareable, None]:
        return Shareable({"i": 0}), None

    receiver.on_data(first("a1", at=994.0), load)  # sent before the receiver started, less 5 s
    wall[0] = 2000.0
    receiver.on_data(first("a2", at=1984.0), load)  # 16 s old: timeout 10 + skew 5 passed
    receiver.on_data(first("a3", at=1986.0), load)  # 14 s old: within
    assert [rc for _, rc, _ in replies] == ["BAD_REQUEST_DATA", "BAD_REQUEST_DATA", "OK"]
    assert "forgotten" in replies[0][2]
    assert "replayed" in replies[0][2]
    assert "more than its timeout (10.0 s) plus the allowed clock skew (5" in replies[1][2]
    assert len(factory.sessions) == 1


def test_receiver_idle_expiry_with_an_injected_clock() -> None:
    now = [0.0]
    replies: list[tuple[int, str, bool]] = []
    receiver = Receiver(
        "site",
        lambda env, reply, ended: replies.append((env.seq, reply.get_return_code(), ended)),
        idle_timeout=10,
        clock=lambda: now[0],
        wall=lambda: 1e9,
    )
    factory = RecordingFactory()
    receiver.register("c", "t", Registration(factory))
    env = Envelope(
        kind="data", tx="ab", seq=0, origin="server", to=("site",), at=1e9, channel="c", topic="t"
    )
    receiver.on_data(env, lambda: (Shareable({"i": 0}), {"k": 1}))
    assert replies == [(0, "OK", False)]
    now[0] = 9.0
    assert not receiver.has_idle()
    now[0] = 10.5
    assert receiver.expire_idle() == 1
    (session,) = factory.returned
    assert session.rc == ReturnCode.TIMEOUT
    assert session.ctx["k"] == 1
    # A late object of the expired session is refused, not applied.
    receiver.on_data(env.model_copy(update={"seq": 1}), lambda: (Shareable({}), None))
    assert replies[-1] == (1, "EARLY_TERMINATION", True)


def test_engine_config_is_validated() -> None:
    with pytest.raises(ConfigurationError, match="object-protocol settings"):
        EngineConfig(workers=0)
    with pytest.raises(ConfigurationError):
        EngineConfig(bogus=1)  # type: ignore[call-arg]

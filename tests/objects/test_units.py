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


def test_stream_context_keys_and_return_codes_are_nvflare_s() -> None:
    assert (StreamContextKey.CHANNEL, StreamContextKey.TOPIC, StreamContextKey.RC) == (
        "__channel__",
        "__topic__",
        "__RC__",
    )
    for name in (
        "OK",
        "ERROR",
        "TIMEOUT",
        "COMMUNICATION_ERROR",
        "EXECUTION_EXCEPTION",
        "TASK_ABORTED",
        "BAD_REQUEST_DATA",
        "TOPIC_UNKNOWN",
        "SERVICE_UNAVAILABLE",
    ):
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
    env = Envelope(kind="data", tx="ab12", seq=3, origin="sérveur", channel="c", topic="t")
    assert decode_envelope(env.model_dump_json(), "x") == env
    assert decode_envelope(env.model_dump(mode="json"), "x") == env
    for raw in (None, b"{", b'{"v": 1}', b'{"v": 2, "kind": "data", "tx": "XY", "seq": 0}'):
        with pytest.raises(FramingError, match="envelope"):
            decode_envelope(raw, "test entry")


def test_payload_is_bound_to_its_envelope_and_signed() -> None:
    env = Envelope(kind="data", tx="ab", seq=1, origin="s")
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
    tombs.add(("s", "t1"), 4, reply, "OK")
    assert tombs.answer(("s", "t1"), 4) is reply
    late = tombs.answer(("s", "t1"), 5)
    assert late is not None
    assert late.get_return_code() == ReturnCode.EARLY_TERMINATION
    tombs.add(("s", "t2"), 0, None, "OK")
    assert ("s", "t1") not in tombs  # the oldest is forgotten
    assert tombs.answer(("s", "t9"), 0) is None


def test_receiver_idle_expiry_with_an_injected_clock() -> None:
    now = [0.0]
    replies: list[tuple[int, str, bool]] = []
    receiver = Receiver(
        "site",
        lambda env, reply, ended: replies.append((env.seq, reply.get_return_code(), ended)),
        idle_timeout=10,
        clock=lambda: now[0],
    )
    factory = RecordingFactory()
    receiver.register("c", "t", Registration(factory))
    env = Envelope(kind="data", tx="ab", seq=0, origin="server", channel="c", topic="t")
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

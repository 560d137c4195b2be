from __future__ import annotations

import pytest

from framework.exceptions import (
    BadSignatureError,
    FramingError,
    MissingSignatureError,
    SerializationError,
    UnsupportedVersionError,
)
from framework.serialize import dumps, encode_frame, loads
from framework.store import StoreConfig
from framework.stream.events import (
    EVENT_VERSION,
    EndOfStreamEvent,
    EventBatch,
    NewObjectEvent,
    NewObjectKeyEvent,
    bytes_to_event,
    decode_message,
    encode_message,
    event_to_bytes,
)

CONFIG = StoreConfig(kind="memory", name="m", options={"segment": "x"})


def _batch(**kwargs: object) -> EventBatch:
    events = [
        NewObjectKeyEvent(key="k1", evict=False, metadata={"i": 1, "name": "héllo→"}),
        NewObjectEvent(part=0, metadata={}),
        EndOfStreamEvent(),
    ]
    fields = {
        "topic": "t",
        "producer": "p",
        "seq": 7,
        "store_config": CONFIG.model_dump(),
        "events": events,
    }
    fields.update(kwargs)
    return EventBatch(**fields)  # type: ignore[arg-type]


def test_message_round_trip_keeps_events_and_parts() -> None:
    batch = _batch()
    message = encode_message(batch, [dumps(b"\x00payload")])
    decoded, parts = decode_message(message.join())
    assert decoded == batch
    assert decoded.config() == CONFIG
    assert decoded.v == EVENT_VERSION
    assert decoded.next_seq == 10
    assert loads(parts[0]) == b"\x00payload"


def test_header_is_json_never_pickle() -> None:
    message = encode_message(_batch(), [dumps(b"x")]).join()
    assert b'"producer":"p"' in message
    assert b'"topic":"t"' in message
    assert b"pickle" not in message.split(b"x")[0]


def test_signed_message_requires_the_secret() -> None:
    message = encode_message(_batch(), [dumps(b"x")], secret=b"s" * 32).join()
    decode_message(message, secret=b"s" * 32)
    with pytest.raises(BadSignatureError):
        decode_message(message, secret=b"t" * 32)
    unsigned = encode_message(_batch(), [dumps(b"x")]).join()
    with pytest.raises(MissingSignatureError):
        decode_message(unsigned, secret=b"s" * 32)


def test_other_envelope_version_is_refused() -> None:
    header = _batch().model_dump(mode="json")
    header["v"] = 99
    with pytest.raises(UnsupportedVersionError, match="version 99"):
        decode_message(encode_frame(header, [b"x"]).join())


@pytest.mark.parametrize(
    "header",
    [{"topic": "t", "events": [{"type": "nope"}]}, {"events": []}, {"topic": "t", "seq": -1}],
)
def test_malformed_batches_are_framing_errors(header: dict[str, object]) -> None:
    with pytest.raises(FramingError, match="not a valid event batch"):
        decode_message(encode_frame(header).join())


def test_inline_event_pointing_past_the_parts_is_refused() -> None:
    with pytest.raises(FramingError, match="missing part 0"):
        decode_message(encode_message(_batch(), []).join())


def test_metadata_that_is_not_json_is_a_serialization_error() -> None:
    batch = EventBatch(topic="t", events=[NewObjectEvent(part=0, metadata={"x": object()})])
    with pytest.raises(SerializationError):
        encode_message(batch, [dumps(b"")])


def test_event_to_bytes_round_trips_inline_objects_including_none() -> None:
    batch = EventBatch(
        topic="t",
        producer="p",
        events=[
            NewObjectEvent(obj=None),
            NewObjectEvent(obj={"a": [1, 2]}, metadata={"m": 1}),
            EndOfStreamEvent(),
        ],
    )
    decoded = bytes_to_event(event_to_bytes(batch))
    inline = [e for e in decoded.events if isinstance(e, NewObjectEvent)]
    assert [e.obj for e in inline] == [None, {"a": [1, 2]}]
    assert inline[1].metadata == {"m": 1}
    assert isinstance(decoded.events[2], EndOfStreamEvent)


def test_empty_batch_round_trips() -> None:
    batch = EventBatch(topic="t")
    assert decode_message(encode_message(batch).join()) == (batch, [])

"""Producer records: signed for one topic, producer and kind of topic; trusted without a secret."""

from __future__ import annotations

from framework.pubsub._records import (
    DURABLE,
    LIST,
    UNTRUSTED,
    RecordCheck,
    record_key,
    signed_state,
)

SECRET = b"s" * 32


def test_a_signed_record_verifies_only_where_it_was_written() -> None:
    check = RecordCheck(DURABLE)
    check.verify_with(SECRET)
    value = signed_state(_key(), DURABLE, "t", "P", "open:r1:live").encode()
    assert check.state("t", b"P", value) == b"open:r1:live"
    for topic, producer in (("u", b"P"), ("t", b"Q")):
        assert check.state(topic, producer, value) == UNTRUSTED
    other = RecordCheck(LIST)
    other.verify_with(SECRET)
    assert other.state("t", b"P", value) == UNTRUSTED  # a durable topic's record
    altered = value.replace(b"open:", b"end:")
    assert check.read("t", {b"P": altered, b"Q": b"end:r2"}) == {b"P": UNTRUSTED, b"Q": UNTRUSTED}
    assert check.state("t", b"P", None) is None


def test_without_a_secret_records_are_trusted_as_they_are() -> None:
    check = RecordCheck(LIST)
    signed = signed_state(_key(), LIST, "t", "P", "open:r1:live").encode()
    assert check.read("t", {b"P": signed, b"Q": b"end:r2"}) == {
        b"P": b"open:r1:live",
        b"Q": b"end:r2",
    }


def _key() -> bytes:
    return record_key(SECRET)

"""An inline object too big for its message is serialized once, not again for the spill store."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from framework.buffers import Segments
from framework.connection import RedisConnection
from framework.framing import encode_frame, sign_frame
from framework.pubsub import RedisPublisher, RedisSubscriber
from framework.serialize import PickleSerializer, dumps
from framework.store import Encoded, RedisStore
from framework.stream import StreamConsumer, StreamProducer

SECRET = b"s" * 32
OBJECTS = [
    b"",
    b"x" * 100_000,
    "text \udcff",
    np.arange(50_000, dtype=np.float32),
    np.zeros((3, 0)),
    {"weights": np.ones(1000), "step": 3},
    [(i, str(i)) for i in range(5000)],
    None,
]


class Counted:
    """Counts how often it is pickled (across all instances of the test)."""

    pickled = 0

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        Counted.pickled += 1
        return (Counted, (self.payload,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Counted) and other.payload == self.payload


def stored_bytes(encoded: Encoded) -> bytes:
    value = encoded.value
    return value if isinstance(value, bytes) else value.join()


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
def test_sign_frame_writes_the_signed_frame(obj: Any) -> None:
    signed = sign_frame(dumps(obj), SECRET)
    assert signed is not None
    assert signed.join() == dumps(obj, secret=SECRET).join()


def test_sign_frame_declines_what_it_cannot_reframe() -> None:
    assert sign_frame(encode_frame({"a": 1}, [b"x"], secret=SECRET), SECRET) is None
    joined = Segments([memoryview(encode_frame({"a": 1}, [b"x" * 10]).join())])
    assert sign_frame(joined, SECRET) is None  # header and parts in one buffer
    assert sign_frame(Segments([memoryview(b"\x00\x00")]), SECRET) is None


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: type(o).__name__)
def test_redis_store_reuses_a_frame_as_encode_would_store_it(
    fake_conn: RedisConnection, obj: Any, secret: bytes | None
) -> None:
    with RedisStore("s", connection=fake_conn, secret=secret) as store:
        reused, fresh = store.encode_serialized(obj, dumps(obj)), store.encode(obj)
        assert reused.raw == fresh.raw
        if secret is None:
            assert stored_bytes(reused) == stored_bytes(fresh)
        else:  # each signed for the object it will be: the same bytes but the MAC
            assert reused.uid != fresh.uid
            assert len(stored_bytes(reused)) == len(stored_bytes(fresh))
            assert stored_bytes(reused)[:-32] == stored_bytes(fresh)[:-32]
        key = store.put_encoded([reused])[0]
        assert dumps(store.get(key)).join() == dumps(obj).join()


def test_a_store_that_serializes_otherwise_serializes_again(fake_conn: RedisConnection) -> None:
    frame = dumps([1, 2], serializer=PickleSerializer())
    with RedisStore("s", connection=fake_conn, serializer=lambda o: b"custom") as custom:
        assert stored_bytes(custom.encode_serialized([1, 2], frame)) == b"custom"
    with RedisStore("s", connection=fake_conn, serializer="pickle") as pickling:
        # The frame came from the default serializer, not this store's: not reused.
        frame = dumps([1, 2])
        reused = pickling.encode_serialized([1, 2], frame)
        assert stored_bytes(reused) == stored_bytes(pickling.encode([1, 2]))


@pytest.mark.parametrize("secret", [None, SECRET], ids=["unsigned", "signed"])
def test_a_spilled_object_is_pickled_once(conn: RedisConnection, secret: bytes | None) -> None:
    big = Counted(b"\x07" * 200_000)
    with (
        StreamConsumer[Any](RedisSubscriber(conn, "t", timeout=5), secret=secret) as consumer,
        StreamProducer[Any](RedisPublisher(conn), secret=secret) as producer,
    ):
        Counted.pickled = 0
        producer.send("t", big)
        producer.send("t", Counted(b"small"))
        producer.close_topics("t")
        assert Counted.pickled == 2  # each object once; the big one was spilled
        assert list(consumer.iter_objects()) == [big, Counted(b"small")]

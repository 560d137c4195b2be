"""RedisStore: unframed raw bytes (``-b`` ids), direct single-key reads, ``stage_batch``."""

from __future__ import annotations

from typing import Any

import pytest

from framework.connection import RedisConnection
from framework.exceptions import ClosedError, ConfigurationError, FrameworkError
from framework.store import RedisStore, StagedBatch
from framework.store.layout import ObjectId

SECRET = b"k" * 32


def _oid(conn: RedisConnection, key: str) -> ObjectId:
    oid = ObjectId.parse(conn.keys.oid_of(key))
    assert oid is not None
    return oid


def test_unsigned_store_keeps_exact_bytes_unframed(any_conn: RedisConnection) -> None:
    value = b"\x00payload" * 1000
    with RedisStore(connection=any_conn) as store:
        key = store.put(value)
        assert _oid(any_conn, key).raw
        assert any_conn.client.get(key) == value  # the value is the object itself
        back = store.get(key, evict=True)
        assert back == value
        assert type(back) is bytes
        assert not store.exists(key)


@pytest.mark.parametrize("obj", [bytearray(b"ab"), memoryview(b"cd"), "text", [b"x"], 1])
def test_other_values_stay_framed(conn: RedisConnection, obj: Any) -> None:
    with RedisStore(connection=conn) as store:
        key = store.put(obj)
        assert not _oid(conn, key).raw
        back = store.get(key)
        assert (bytes(back) == bytes(obj)) if isinstance(obj, memoryview) else back == obj


@pytest.mark.parametrize(
    "options", [{"secret": SECRET}, {"serializer": "pickle"}, {"serializer": "json"}]
)
def test_signed_or_non_raw_stores_frame_bytes(conn: RedisConnection, options: Any) -> None:
    serializer_json = options.get("serializer") == "json"
    with RedisStore(connection=conn, **options) as store:
        if serializer_json:
            with pytest.raises(FrameworkError):
                store.put(b"abc")
            return
        key = store.put(b"abc")
        assert not _oid(conn, key).raw
        assert store.get(key) == b"abc"


def test_signed_store_refuses_raw_values(conn: RedisConnection) -> None:
    with RedisStore(connection=conn) as plain, RedisStore(connection=conn, secret=SECRET) as signed:
        key = plain.put(b"forged")
        with pytest.raises(FrameworkError):
            signed.get(key)


def test_split_and_counted_raw_bytes(any_conn: RedisConnection) -> None:
    value = bytes(range(256)) * 10
    with RedisStore(connection=any_conn, part_size=1000) as store:
        key = store.put(value, readers=2)
        oid = _oid(any_conn, key)
        assert (oid.raw, oid.parts, oid.counted) == (True, 3, True)
        assert store.get_batch([key, key]) == [value, value]
        assert not store.exists(key)


def test_stage_batch_writes_what_put_batch_would(any_conn: RedisConnection) -> None:
    objs = [b"raw", {"a": 1}, None, "s" * 5000]
    with RedisStore(connection=any_conn, ttl=30) as store:
        staged = store.stage_batch(objs)
        assert isinstance(staged, StagedBatch)
        assert len(staged.keys) == len(objs) == len(staged.writes)
        assert staged.px == 30_000
        assert all(cmd[0] == "SET" and cmd[-2:] == ("PX", 30_000) for cmd in staged.commands)
        assert store.get_batch(staged.keys, default="absent") == ["absent"] * 4  # not sent yet
        for command in staged.commands:
            any_conn.client.execute_command(*command)
        assert store.get_batch(staged.keys, evict=True) == objs


def test_stage_batch_checks_like_put_batch(fake_conn: RedisConnection) -> None:
    store = RedisStore(connection=fake_conn)
    assert store.stage_batch([]) == StagedBatch([], [], None)
    with pytest.raises(ConfigurationError):
        store.stage_batch([1], ttl=-1)
    with pytest.raises(ConfigurationError):
        store.stage_batch([1], readers=0)
    store.close()
    with pytest.raises(ClosedError):
        store.stage_batch([1])


def test_single_key_reads_need_no_pipeline(real_conn: RedisConnection, monkeypatch) -> None:
    with RedisStore(connection=real_conn) as store:
        keys = store.put_batch([b"a", [1, 2]])

        def no_pipeline(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a pipeline was used")

        monkeypatch.setattr(type(real_conn.client), "pipeline", no_pipeline)
        assert store.get(keys[0]) == b"a"
        assert store.get(keys[1], evict=True) == [1, 2]
        assert store.get(keys[1], default=None) is None


def test_redis_store_is_a_staging_store(fake_conn: RedisConnection) -> None:
    from framework.store import StagingStore

    with RedisStore(connection=fake_conn) as store:
        assert isinstance(store, StagingStore)
        assert store.connection is fake_conn


def test_stage_batch_applies_the_stores_serializer(any_conn: RedisConnection) -> None:
    def serialize(obj: object) -> bytes:
        return b"custom:" + repr(obj).encode()

    def deserialize(data: bytes) -> object:
        assert data.startswith(b"custom:"), data
        return ("read", data[len(b"custom:") :].decode())

    with RedisStore(connection=any_conn, serializer=serialize, deserializer=deserialize) as store:
        staged = store.stage_batch([{"a": 1}, 7])
        for command in staged.commands:
            any_conn.client.execute_command(*command)
        assert store.get_batch(staged.keys) == store.get_batch(store.put_batch([{"a": 1}, 7]))
        assert store.get_batch(staged.keys) == [("read", "{'a': 1}"), ("read", "7")]

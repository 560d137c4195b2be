"""RedisStore behaviour beyond the contract: key layout, splitting, TTL, signing, round trips."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import redis

from framework.connection import RedisConnection
from framework.exceptions import (
    AuthenticationFailed,
    BackendUnavailable,
    BadSignatureError,
    ClosedError,
    ConfigurationError,
    DeserializationError,
    FramingError,
    MissingSignatureError,
)
from framework.objects.envelope import Envelope, seal_payload
from framework.serialize import dumps
from framework.store import SECRET_ENV_VAR, RedisStore, StoreConfig
from framework.store.layout import MAX_PARTS

SECRET = b"k" * 32
_TAG = re.compile(rb"\{([^}]*)\}")


def _object_keys(conn: RedisConnection) -> list[bytes]:
    if conn.is_cluster:
        return list(conn.client.scan_iter(match="fw:obj:*", target_nodes="all"))
    return list(conn.client.scan_iter(match="fw:obj:*"))


def test_split_object_keys_share_one_hash_tag(any_conn: RedisConnection) -> None:
    with RedisStore(connection=any_conn, part_size=100) as store:
        key = store.put(b"x" * 1000, readers=2, ttl=60)
        keys = _object_keys(any_conn)
        # Raw bytes are stored unframed: the object key, 9 more parts, the read counter.
        assert len(keys) == 11
        assert {_TAG.search(k).group(1) for k in keys} == {key.encode()[8:-1]}  # type: ignore[union-attr]
        if any_conn.is_cluster:
            assert len({any_conn.client.keyslot(k) for k in keys}) == 1
        assert all(0 < any_conn.client.pttl(k) <= 60_000 for k in keys)
        assert store.get(key) == b"x" * 1000
        assert store.get(key) == b"x" * 1000
        assert _object_keys(any_conn) == []  # the second read removed every part


def test_evicting_a_split_object_removes_every_part(conn: RedisConnection) -> None:
    with RedisStore(connection=conn, part_size=10) as store:
        first, second = store.put_batch([list(range(50)), "y" * 99])
        store.evict(first)
        assert store.get(second, evict=True) == "y" * 99
        assert _object_keys(conn) == []


def test_a_missing_part_makes_the_object_missing(conn: RedisConnection) -> None:
    with RedisStore(connection=conn, part_size=10) as store:
        key = store.put(b"z" * 100)
        conn.client.delete(f"{key}:3")
        assert store.get(key, default="gone") == "gone"


def test_keys_are_the_schema_object_keys(conn: RedisConnection) -> None:
    with RedisStore(connection=conn) as store:
        key = store.put(1)
        assert conn.keys.oid_of(key)
        assert conn.client.exists(key)


def test_forged_part_counts_are_ignored(conn: RedisConnection) -> None:
    with RedisStore(connection=conn) as store:
        forged = f"fw:obj:{{{'a' * 32}-p{MAX_PARTS + 1}}}"
        assert store.get(forged, default=None) is None
        assert not store.exists(forged)


def test_default_ttl_applies_to_every_put(conn: RedisConnection) -> None:
    with RedisStore(connection=conn, ttl=30) as store:
        keys = [store.put(1), *store.put_batch([2, 3])]
        assert all(0 < conn.client.pttl(k) <= 30_000 for k in keys)
        longer = store.put(4, ttl=300)
        assert conn.client.pttl(longer) > 30_000


def test_batches_are_one_command_each(real_conn: RedisConnection) -> None:
    with RedisStore(connection=real_conn) as store:
        real_conn.client.config_resetstat()
        keys = store.put_batch([{"i": i} for i in range(100)])
        assert store.get_batch(keys) == [{"i": i} for i in range(100)]
        stats = real_conn.client.info("commandstats")
        assert stats["cmdstat_mset"]["calls"] == 1
        assert stats["cmdstat_mget"]["calls"] == 1
        assert "cmdstat_set" not in stats
        assert "cmdstat_get" not in stats


def test_cluster_batches_span_slots(cluster_conn: RedisConnection) -> None:
    with RedisStore(connection=cluster_conn) as store:
        keys = store.put_batch(list(range(200)), ttl=60)
        assert len({cluster_conn.client.keyslot(k) for k in keys}) > 50
        assert store.get_batch(keys, evict=True) == list(range(200))
        assert _object_keys(cluster_conn) == []


def test_signed_store_refuses_unsigned_and_foreign_objects(conn: RedisConnection) -> None:
    with (
        RedisStore(connection=conn, secret=SECRET) as signed,
        RedisStore(connection=conn) as plain,
        RedisStore(connection=conn, secret=b"other") as other,
    ):
        key = signed.put({"ok": True})
        assert signed.get(key) == {"ok": True}
        assert plain.get(key) == {"ok": True}  # no secret: the MAC is not checked
        with pytest.raises(BadSignatureError):
            other.get(key)
        with pytest.raises(MissingSignatureError):
            signed.get(plain.put({"unsigned": True}))
        value = bytearray(conn.client.get(key))
        value[-40] ^= 1
        conn.client.set(key, bytes(value))
        with pytest.raises(BadSignatureError):
            signed.get(key)


def test_a_signed_value_copied_to_another_key_is_refused(conn: RedisConnection) -> None:
    """Each object is signed for its own id: anyone who can write to Redis can copy a
    valid value to another object's key, but it does not verify there."""
    with RedisStore(connection=conn, secret=SECRET, part_size=100) as store:
        first, second = store.put({"i": 1}), store.put({"i": 2})
        big = store.put(b"x" * 1000, readers=2)  # split and counted
        conn.client.set(first, conn.client.get(second))
        with pytest.raises(BadSignatureError, match="signed for another object"):
            store.get(first)
        assert store.get(second) == {"i": 2}
        assert store.get(big) == b"x" * 1000
        # Staged, spilled and encoded values are bound to the key they are stored under.
        encoded = store.encode({"i": 3})
        (key,) = store.put_encoded([encoded])
        assert encoded.uid is not None
        assert encoded.uid in key
        assert store.get(key) == {"i": 3}


def test_a_signed_message_of_another_protocol_copied_over_an_object_is_refused(
    conn: RedisConnection,
) -> None:
    """One secret for a store and an object-protocol engine: whoever can write to Redis
    copies a signed engine payload (read from a mailbox) over a stored object. Signed
    with the secret itself, it passed as an object stored without an id."""
    with RedisStore(connection=conn, secret=SECRET) as store:
        key = store.put({"amount": 1})
        env = Envelope(kind="data", tx="ab" * 16, seq=0, origin="server", to=("site",), at=0.0)
        conn.client.set(key, seal_payload(env, {"amount": 10**6}, SECRET).join())
        with pytest.raises(BadSignatureError, match="signed for another purpose") as raised:
            store.get(key)
        assert key in str(raised.value)
        # A value signed with the store's secret as a store writes it (no meta) still reads.
        conn.client.set(key, dumps({"amount": 2}, secret=SECRET).join())
        assert store.get(key) == {"amount": 2}


def test_get_with_allow_pickle_false_refuses_only_pickles(conn: RedisConnection) -> None:
    """The reader's choice, whatever the store's serializer (a stream consumer's)."""
    with RedisStore(connection=conn) as store:
        pickled, text = store.put({"a": 1}), store.put("text")
        array = store.put(np.arange(4))
        with pytest.raises(DeserializationError, match="allow_pickle is False"):
            store.get(pickled, allow_pickle=False)
        assert store.get(text, allow_pickle=False) == "text"
        assert store.get(array, allow_pickle=False).tolist() == [0, 1, 2, 3]
        assert store.get(pickled) == {"a": 1}


def test_signed_config_takes_the_secret_from_the_environment(
    real_conn: RedisConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RedisStore("signed", connection=real_conn, secret=SECRET) as store:
        config = store.config()
        assert config.options["signed"] is True
        assert SECRET.decode() not in config.model_dump_json()
        monkeypatch.delenv(SECRET_ENV_VAR, raising=False)
        with pytest.raises(ConfigurationError, match=SECRET_ENV_VAR):
            RedisStore.from_config(config)
        monkeypatch.setenv(SECRET_ENV_VAR, SECRET.decode())
        key = store.put([1])
        with RedisStore.from_config(config) as rebuilt:
            assert rebuilt.config() == config
            assert rebuilt.get(key) == [1]


def test_json_store_never_unpickles(conn: RedisConnection) -> None:
    with (
        RedisStore(connection=conn, serializer="json") as safe,
        RedisStore(connection=conn) as pickling,
    ):
        assert safe.get(safe.put({"a": [1, None]})) == {"a": [1, None]}
        with pytest.raises(DeserializationError, match="allow_pickle"):
            safe.get(pickling.put({1, 2}))


def test_config_has_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRAMEWORK_REDIS_URL", raising=False)
    url = "rediss://alice:s3cret@redis.example:6380/2?ssl_ca_certs=/ca.pem&prefix=app"
    with RedisConnection.from_url(url) as conn, RedisStore(connection=conn) as store:
        options = store.config().options
        assert options["url"] == "rediss://redis.example:6380/2"
        assert options["prefix"] == "app"
        assert "s3cret" not in store.config().model_dump_json()
        rebuilt = RedisStore.from_config(store.config())
        with rebuilt:
            settings = rebuilt.connection.settings
            assert (settings.host, settings.port, settings.db, settings.prefix) == (
                "redis.example",
                6380,
                2,
                "app",
            )
            assert settings.password is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("rediss://bob:pw@redis.example:6380/0?ssl_ca_certs=/ca.pem", "pw"),
        ("rediss://bob:pw@elsewhere:6380/0", None),
        ("redis://bob:pw@redis.example:6380/0", None),  # no TLS: another deployment
    ],
)
def test_rebuilt_store_takes_credentials_from_its_own_environment(
    monkeypatch: pytest.MonkeyPatch, env: str, expected: str | None
) -> None:
    monkeypatch.setenv("FRAMEWORK_REDIS_URL", env)
    config = StoreConfig(
        kind="redis", name="r", options={"url": "rediss://redis.example:6380/1", "prefix": "fw"}
    )
    with RedisStore.from_config(config) as store:
        password = store.connection.settings.password
        assert (password.get_secret_value() if password else None) == expected
        assert store.connection.settings.db == 1  # the db is the producer's, not ours


@pytest.mark.parametrize(
    ("config_host", "env_host", "expected"),
    [
        ("127.0.0.1", "localhost", "pw"),  # one machine, spelled two ways
        ("localhost", "127.0.0.1", "pw"),
        ("127.0.0.1", "no-such-host.invalid", None),
    ],
)
def test_a_host_spelled_another_way_is_the_same_deployment(
    monkeypatch: pytest.MonkeyPatch, config_host: str, env_host: str, expected: str | None
) -> None:
    """Before, a producer on ``localhost`` and a consumer whose FRAMEWORK_REDIS_URL said
    127.0.0.1 failed with AuthenticationFailed, told to set the variable it had set."""
    monkeypatch.setenv("FRAMEWORK_REDIS_URL", f"redis://:pw@{env_host}:6390/0")
    url = f"redis://{config_host}:6390/0"
    config = StoreConfig(kind="redis", name="r", options={"url": url, "prefix": "fw"})
    with RedisStore.from_config(config) as store:
        password = store.connection.settings.password
        assert (password.get_secret_value() if password else None) == expected


def test_a_rebuilt_store_without_credentials_says_how_to_give_them(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A consumer rebuilding the producer's store from its config, on a Redis that needs
    # a password: "put user:password in the URL" does not help, the URL came from Redis.
    monkeypatch.delenv("FRAMEWORK_REDIS_URL", raising=False)
    admin = redis.Redis.from_url(redis_url)
    admin.config_set("requirepass", "pw/of?consumer")
    try:
        with RedisConnection.from_url(redis_url, password="pw/of?consumer") as conn:
            store = RedisStore("shared", connection=conn)
            key = store.put(b"payload")
            with (
                RedisStore.from_config(store.config()) as rebuilt,
                pytest.raises(AuthenticationFailed) as info,
            ):
                rebuilt.get(key)
            message = str(info.value)
            assert "requires a password and none was given" in message
            assert "store 'shared' was rebuilt from its config" in message
            assert "FRAMEWORK_REDIS_URL" in message
            assert "register_store()" in message
            assert "pw/of?consumer" not in message
            # A variable naming another deployment is named in the hint.
            monkeypatch.setenv("FRAMEWORK_REDIS_URL", "redis://:x@elsewhere.invalid:6390/0")
            with (
                RedisStore.from_config(store.config()) as rebuilt,
                pytest.raises(AuthenticationFailed, match=r"it names elsewhere\.invalid:6390, not"),
            ):
                rebuilt.get(key)
            # The first way it names works.
            own = redis_url.replace("redis://", "redis://:pw%2Fof%3Fconsumer@")
            monkeypatch.setenv("FRAMEWORK_REDIS_URL", own)
            with RedisStore.from_config(store.config()) as rebuilt:
                assert rebuilt.get(key) == b"payload"
            store.close()
    finally:
        admin.execute_command("AUTH", "pw/of?consumer")
        admin.config_set("requirepass", "")
        admin.close()


def test_store_on_an_injected_client_cannot_be_rebuilt(fake_conn: RedisConnection) -> None:
    store = RedisStore("fake", connection=fake_conn)
    with store, pytest.raises(ConfigurationError, match="fake"):
        RedisStore.from_config(store.config())


def test_store_closes_only_connections_it_built(real_conn: RedisConnection) -> None:
    store = RedisStore(connection=real_conn)
    store.close()
    assert real_conn.client.ping()
    rebuilt = RedisStore.from_config(store.config())
    rebuilt.put(1)
    rebuilt.close()
    with pytest.raises(ClosedError, match="closed"):
        rebuilt.connection.client  # noqa: B018


def test_unreachable_redis_raises_backend_unavailable() -> None:
    conn = RedisConnection.from_url("redis://127.0.0.1:1/0?connect_timeout=0.5&retries=0")
    with conn, RedisStore(connection=conn) as store:
        with pytest.raises(BackendUnavailable, match="store 1 object"):
            store.put(b"x")
        with pytest.raises(BackendUnavailable):
            store.get("fw:obj:{" + "0" * 32 + "}")


@pytest.mark.parametrize("bad", [0, -1, 1.5, "big"])
def test_invalid_part_size_is_refused(fake_conn: RedisConnection, bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="part_size"):
        RedisStore(connection=fake_conn, part_size=bad)


def test_large_values_round_trip_zero_copy(real_conn: RedisConnection) -> None:
    array = np.arange(4 * 1024 * 1024, dtype=np.float64)  # 32 MB
    with RedisStore(connection=real_conn) as store:
        assert real_conn.zero_copy
        key = store.put(array)
        assert np.array_equal(store.get(key, evict=True), array)
        data = b"\x01" * (40 * 1024 * 1024)
        assert store.get(store.put(data)) == data


def test_redis_errors_do_not_leak(real_conn: RedisConnection) -> None:
    with RedisStore(connection=real_conn) as store:
        key = store.put(1)
        real_conn.client.delete(key)
        real_conn.client.lpush(key, b"not a string")
        with pytest.raises(Exception) as info:
            store.get(key)
        assert not isinstance(info.value, redis.RedisError)


@pytest.mark.parametrize("garbage", [b"\x00garbage", b""])
def test_a_value_that_is_no_frame_names_its_key_and_store(
    conn: RedisConnection, garbage: bytes
) -> None:
    """A batch read said only "The frame is truncated...": which of its keys was it?"""
    with RedisStore("gs", connection=conn) as store:
        good, bad = store.put_batch(["good", "bad"])
        conn.client.set(bad, garbage)
        with pytest.raises(FramingError) as caught:
            store.get_batch([good, bad])
        assert f"Object {bad!r} of store 'gs' cannot be read: " in str(caught.value)
        assert store.get(good) == "good"

"""RedisConnection: client policy, large values on the wire, error mapping, lifecycle."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import fakeredis
import numpy as np
import pytest
import redis
import redis.exceptions as rex
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from redis.cluster import RedisCluster
from redis.connection import BlockingConnectionPool, ConnectionPool

from framework.buffers import Segments
from framework.connection import JOIN_BELOW, MAX_BLOCK_MS, RedisConnection, mapped_errors
from framework.embedded import EmbeddedRedis
from framework.exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ClosedError,
    ConfigurationError,
    PermissionDenied,
)
from framework.settings import ENV_VAR, RedisSettings
from framework.wire import ZeroCopyConnection, ZeroCopySerializer
from tests.proxies import ReplyDropper

SECRET = "hunter2-secret"


def _segments() -> Segments:
    return Segments([b"head:", np.arange(200_000, dtype=np.float64), "é→".encode(), b""])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# --- packing -----------------------------------------------------------------------------


def test_pipeline_packing_keeps_parts_uncopied(real_conn: RedisConnection) -> None:
    seg = _segments()
    pool = real_conn.client.connection_pool
    connection = pool.get_connection()
    try:
        out = connection.pack_commands([("SET", "a", seg), ("GET", "a"), ("SET", "b", seg)])
    finally:
        pool.release(connection)
    assert sum(item is seg.parts[1] for item in out) == 2


# --- round trips on every backend ------------------------------------------------------


def test_segments_round_trip(any_conn: RedisConnection) -> None:
    seg = _segments()
    key = any_conn.keys.obj("seg")
    any_conn.client.set(key, any_conn.bulk(seg))
    assert any_conn.client.get(key) == seg.join()


def test_large_memoryview_round_trip(any_conn: RedisConnection) -> None:
    array = np.random.default_rng(1).random(4 << 20)  # 32 MB of float64
    key = any_conn.keys.obj("big")
    any_conn.client.set(key, any_conn.bulk(array.data))
    assert any_conn.client.get(key) == array.tobytes()


def test_pipeline_with_segments(any_conn: RedisConnection) -> None:
    seg = _segments()
    keys = [any_conn.keys.obj(f"p{i}") for i in range(4)]  # different slots on a cluster
    pipe = any_conn.client.pipeline(transaction=False)
    for key in keys:
        pipe.set(key, any_conn.bulk(seg))
    for key in keys:
        pipe.get(key)
    replies = pipe.execute()
    assert replies[len(keys) :] == [seg.join()] * len(keys)


def test_bulk_joins_only_without_zero_copy(fake_conn: RedisConnection) -> None:
    seg = _segments()
    assert not fake_conn.zero_copy
    assert fake_conn.bulk(seg) == seg.join()
    one = Segments([b"o" * (JOIN_BELOW + 1)])
    assert fake_conn.bulk(one) is one.parts[0]
    assert fake_conn.bulk(b"x") == b"x"
    view = fake_conn.bulk(np.arange(3, dtype=np.int16).data)
    assert (view.format, len(view)) == ("B", 6)


def test_bulk_passes_segments_through_with_zero_copy(real_conn: RedisConnection) -> None:
    seg = _segments()
    assert real_conn.zero_copy
    assert real_conn.bulk(seg) is seg


@pytest.mark.parametrize("conn_name", ["fake_conn", "real_conn"])
def test_bulk_joins_small_segments_on_every_connection(
    conn_name: str, request: pytest.FixtureRequest
) -> None:
    conn: RedisConnection = request.getfixturevalue(conn_name)
    small = Segments([b"head", b"x" * (JOIN_BELOW - 4)])
    joined = conn.bulk(small)
    assert type(joined) is bytes
    assert joined == small.join()


# --- client policy -------------------------------------------------------------------


def test_three_roles_follow_the_policy(redis_url: str) -> None:
    with RedisConnection.from_url(redis_url, retries=2, max_connections=9) as conn:
        pools = [c.connection_pool for c in (conn.client, conn.once, conn.blocking)]
        assert len({id(p) for p in pools}) == 3
        assert all(p.max_connections == 9 for p in pools)
        assert all(p.connection_class is ZeroCopyConnection for p in pools)
        kwargs = [p.connection_kwargs for p in pools]
        assert [k["retry"].get_retries() for k in kwargs] == [2, 0, 0]
        assert kwargs[0]["socket_timeout"] == conn.settings.socket_timeout
        assert kwargs[2]["socket_timeout"] == conn.settings.socket_timeout + MAX_BLOCK_MS / 1000
        assert not any(k["decode_responses"] for k in kwargs)
        connection = pools[0].get_connection()
        try:
            assert type(connection._parser).__name__ == "_HiredisParser"
            assert isinstance(connection._command_packer, ZeroCopySerializer)
        finally:
            pools[0].release(connection)


def test_cluster_nodes_use_the_zero_copy_packer(cluster_conn: RedisConnection) -> None:
    assert cluster_conn.is_cluster
    assert cluster_conn.zero_copy
    for client, retries in ((cluster_conn.client, 3), (cluster_conn.once, 0)):
        assert client.retry.get_retries() == retries
        for node in client.get_nodes():
            assert node.redis_connection.connection_pool.connection_class is ZeroCopyConnection
    node = cluster_conn.blocking.get_default_node()
    timeout = node.redis_connection.connection_pool.connection_kwargs["socket_timeout"]
    assert timeout > MAX_BLOCK_MS / 1000


def test_blocking_client_survives_a_max_block_read(redis_url: str) -> None:
    with RedisConnection.from_url(redis_url, socket_timeout=0.3) as conn:
        stream = conn.keys.events("quiet")
        started = time.monotonic()
        assert conn.blocking.xread({stream: "$"}, block=MAX_BLOCK_MS) in ([], {})
        assert time.monotonic() - started >= MAX_BLOCK_MS / 1000 * 0.9
        # The same read on a non-blocking client hits its shorter socket timeout.
        with (
            pytest.raises(BackendTimeout, match="did not answer in time"),
            conn.mapped_errors(f"read stream {stream!r}", command="XREAD"),
        ):
            conn.once.xread({stream: "$"}, block=MAX_BLOCK_MS)


def test_blocking_client_survives_a_max_block_read_on_the_cluster(cluster_url: str) -> None:
    with RedisConnection.from_url(cluster_url, socket_timeout=0.3) as conn:
        stream = conn.keys.events("quiet")
        assert conn.blocking.xread({stream: "$"}, block=MAX_BLOCK_MS) in ([], {})


@pytest.fixture
def dropper(redis_url: str) -> Iterator[ReplyDropper]:
    upstream = RedisSettings.from_url(redis_url)
    proxy = ReplyDropper((upstream.host, upstream.port), b"dropped-reply")
    yield proxy
    proxy.close()


def test_once_never_retries_a_write_whose_reply_was_lost(
    redis_url: str, dropper: ReplyDropper
) -> None:
    with RedisConnection.from_url(redis_url) as direct:
        direct.client.delete("dropped-reply")
        with RedisConnection.from_url(f"redis://127.0.0.1:{dropper.port}", retries=2) as conn:
            with (
                pytest.raises(BackendUnavailable),
                conn.mapped_errors("increment 'dropped-reply'", command="INCR"),
            ):
                conn.once.incr("dropped-reply")
            assert direct.client.get("dropped-reply") == b"1"
            # The retrying client resends the same write: the duplication `once` avoids.
            with (
                pytest.raises(BackendUnavailable),
                conn.mapped_errors("increment 'dropped-reply'", command="INCR"),
            ):
                conn.client.incr("dropped-reply")
            assert direct.client.get("dropped-reply") == b"4"
        direct.client.delete("dropped-reply")


# --- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (rex.ConnectionError("refused"), BackendUnavailable),
        (rex.AuthenticationError("invalid username-password pair"), AuthenticationFailed),
        (rex.AuthenticationError("Authentication required."), AuthenticationFailed),
        (rex.NoPermissionError("no permissions to run the 'get' command"), PermissionDenied),
        (rex.MaxConnectionsError("Too many connections"), BackendUnavailable),
        (rex.ClusterDownError("CLUSTERDOWN"), BackendUnavailable),
        (rex.TimeoutError("slow"), BackendTimeout),
        (rex.ResponseError("WRONGTYPE"), BackendError),
        (rex.DataError("bad type"), BackendError),
        (rex.RedisClusterException("keys in several slots"), BackendError),
        (rex.InvalidResponse('Protocol error, got "<" as reply type byte'), BackendUnavailable),
    ],
)
def test_mapped_errors(raised: Exception, expected: type[BackendError]) -> None:
    with (
        pytest.raises(expected) as info,
        mapped_errors("read key 'k'", url="redis://h:1/0", command="GET"),
    ):
        raise raised
    assert type(info.value) is expected
    assert info.value.__cause__ is raised
    assert info.value.command == "GET"
    message = str(info.value)
    assert message.startswith("Could not read key 'k': Redis at redis://h:1/0 ")
    assert message.endswith((".", "?"))


def test_errors_that_a_wrong_server_or_tls_setting_causes_say_so() -> None:
    not_redis = pytest.raises(BackendUnavailable, match=r"not the Redis protocol.*a Redis server")
    with not_redis, mapped_errors("ping Redis", url="redis://h:80/0"):
        raise rex.InvalidResponse('Protocol error, got "H" as reply type byte')
    tls = pytest.raises(BackendTimeout, match=r"Is TLS enabled on that port \(rediss://\)\?")
    with tls, mapped_errors("ping Redis", url="rediss://h:6379/0"):
        raise rex.TimeoutError("Timeout connecting to server")
    with pytest.raises(BackendTimeout) as info, mapped_errors("ping Redis", url="redis://h/0"):
        raise rex.TimeoutError("Timeout connecting to server")
    assert "TLS" not in str(info.value)


def test_mapped_errors_lets_other_exceptions_through() -> None:
    with pytest.raises(KeyError), mapped_errors("look up"):
        raise KeyError("x")


def test_closed_port_is_backend_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"redis://user:{SECRET}@127.0.0.1:{_free_port()}/0"
    with RedisConnection.from_url(url, retries=1, connect_timeout=1) as conn:
        with pytest.raises(BackendUnavailable, match=r"did not answer PING|unreachable") as info:
            conn.ping()
        assert isinstance(info.value.__cause__, rex.ConnectionError)
        with (
            pytest.raises(BackendUnavailable, match=r"Could not read key 'k'") as info,
            conn.mapped_errors("read key 'k'", command="GET"),
        ):
            conn.client.get("k")
        for text in (str(info.value), repr(conn), conn.url(), caplog.text):
            assert SECRET not in text
        assert "user:***@" in str(info.value)


def test_cluster_errors_are_mapped(cluster_conn: RedisConnection) -> None:
    with pytest.raises(BackendError, match="slot"), cluster_conn.mapped_errors("read two objects"):
        cluster_conn.client.mget("a", "b")  # different slots, no shared hash tag


def test_response_errors_are_backend_errors(real_conn: RedisConnection) -> None:
    real_conn.client.set("text", b"x")
    with (
        pytest.raises(BackendError, match="WRONGTYPE") as info,
        real_conn.mapped_errors("append to stream 'text'", command="XADD"),
    ):
        real_conn.once.xadd("text", {"f": b"v"})
    assert not isinstance(info.value, BackendUnavailable)


def test_unreachable_cluster_is_backend_unavailable() -> None:
    conn = RedisConnection.from_url(f"redis+cluster://127.0.0.1:{_free_port()}", connect_timeout=1)
    with conn, pytest.raises(BackendUnavailable):
        conn.ping()


# --- credentials, repr, lifecycle ------------------------------------------------------


def test_username_and_password_come_from_the_url(redis_url: str) -> None:
    settings = RedisSettings.from_url(redis_url)
    admin = redis.Redis(host=settings.host, port=settings.port)
    admin.acl_setuser(
        "fw-test", enabled=True, passwords=[f"+{SECRET}"], keys=["*"], commands=["+@all"]
    )
    try:
        base = f"redis://fw-test:{{}}@{settings.host}:{settings.port}/0"
        with RedisConnection.from_url(base.format(SECRET)) as conn:
            conn.ping()
            assert conn.client.acl_whoami() in ("fw-test", b"fw-test")
            assert SECRET not in repr(conn)
        with RedisConnection.from_url(base.format("wrong")) as conn:
            with pytest.raises(AuthenticationFailed, match="refused the credentials") as info:
                conn.ping()
            assert "wrong" not in str(info.value)
        with RedisConnection.from_url(f"redis://{settings.host}:{settings.port}/0") as conn:
            admin.config_set("requirepass", SECRET)  # the default user now needs one too
            try:
                with pytest.raises(AuthenticationFailed, match="requires a password"):
                    conn.ping()
            finally:
                admin.execute_command("AUTH", SECRET)
                admin.config_set("requirepass", "")
    finally:
        admin.acl_deluser("fw-test")
        admin.close()


def test_repr_and_logs_never_show_the_password(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = RedisConnection.from_url(redis_url, password=SECRET)
    with conn:
        _ = (conn.client, conn.once, conn.blocking)
        logging.getLogger("test").info("using %s and %r", conn, conn.settings)
        assert "***" in repr(conn)
    assert "closed" in repr(conn)
    for text in (repr(conn), str(conn), conn.url(), caplog.text):
        assert SECRET not in text


def test_close_is_idempotent_and_disconnects_owned_pools(redis_url: str) -> None:
    conn = RedisConnection.from_url(redis_url)
    ids = {role.client_id() for role in (conn.client, conn.once, conn.blocking)}
    assert len(ids) == 3
    conn.close()
    conn.close()
    settings = RedisSettings.from_url(redis_url)
    with redis.Redis(host=settings.host, port=settings.port) as admin:
        assert not ids & {c["id"] for c in admin.client_list()}
    for role in ("client", "once", "blocking"):
        with pytest.raises(ClosedError, match="closed"):
            getattr(conn, role)


def test_injected_client_is_shared_and_never_closed(redis_url: str) -> None:
    settings = RedisSettings.from_url(redis_url)
    with redis.Redis(host=settings.host, port=settings.port) as injected:
        with RedisConnection(client=injected) as conn:
            assert conn.client is conn.once is conn.blocking is injected
            assert not conn.zero_copy  # redis-py's default (hiredis) packer
            assert conn.url() == f"redis://{settings.host}:{settings.port}/0"
            conn.ping()
        assert injected.ping()
        pool = ConnectionPool(
            connection_class=ZeroCopyConnection, host=settings.host, port=settings.port
        )
        with redis.Redis(connection_pool=pool) as ours:
            assert RedisConnection(client=ours).zero_copy
        pool.disconnect()


def test_injected_cluster_client(cluster_url: str) -> None:
    host, port = RedisSettings.from_url(cluster_url).startup_nodes[0]
    with RedisCluster(host=host, port=port) as injected:
        conn = RedisConnection(client=injected)
        assert conn.is_cluster
        assert not conn.zero_copy
        assert conn.url().startswith("redis+cluster://")
        conn.close()
        assert injected.ping()


# Clients that return str: every reader compares reply fields to bytes, so a stream
# subscriber would acknowledge and drop each message as foreign. None needs a server.
_DECODING_CLIENTS = {
    "redis": lambda: redis.Redis(decode_responses=True),
    "redis-url": lambda: redis.Redis.from_url("redis://127.0.0.1?decode_responses=1"),
    # redis-py keeps URL values as strings and tests them for truth: "false" decodes too.
    "redis-url-false": lambda: redis.Redis.from_url("redis://127.0.0.1?decode_responses=false"),
    "redis-blocking-pool": lambda: redis.Redis(
        connection_pool=BlockingConnectionPool(decode_responses=True)
    ),
    "fakeredis": lambda: fakeredis.FakeRedis(decode_responses=True),
    "fakeredis-strict": lambda: fakeredis.FakeStrictRedis(decode_responses=True),
}


@pytest.mark.parametrize("make", _DECODING_CLIENTS.values(), ids=_DECODING_CLIENTS.keys())
def test_client_that_decodes_responses_is_refused(make: Callable[[], Any]) -> None:
    injected = make()
    try:
        with pytest.raises(ConfigurationError, match="decode_responses=True") as caught:
            RedisConnection(client=injected)
        assert "needs bytes replies: build the client without it" in str(caught.value)
    finally:
        injected.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda: redis.Redis(),
        lambda: redis.Redis(decode_responses=False),
        lambda: fakeredis.FakeRedis(),
        lambda: SimpleNamespace(close=lambda: None),  # the setting cannot be read
    ],
    ids=["redis", "redis-false", "fakeredis", "unknown"],
)
def test_client_returning_bytes_is_accepted(make: Callable[[], Any]) -> None:
    injected = make()
    try:
        with RedisConnection(client=injected) as conn:
            assert conn.client is injected
    finally:
        injected.close()


def test_cluster_client_that_decodes_responses_is_refused(cluster_url: str) -> None:
    host, port = RedisSettings.from_url(cluster_url).startup_nodes[0]
    refused = pytest.raises(ConfigurationError, match="RedisCluster was built with decode_resp")
    with RedisCluster(host=host, port=port, decode_responses=True) as injected, refused:
        RedisConnection(client=injected)


def test_fake_connection(fake_conn: RedisConnection) -> None:
    assert fake_conn.url() == "fakeredis://"
    assert not fake_conn.is_cluster
    fake_conn.ping()


def test_settings_default_to_the_environment(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, redis_url)
    with RedisConnection() as conn:
        assert conn.settings == RedisSettings.from_url(redis_url)
        conn.ping()
    monkeypatch.setenv(ENV_VAR, "redis://h:port")
    with pytest.raises(ConfigurationError, match=ENV_VAR):
        RedisConnection()


# --- unix socket and TLS (servers of their own: the session server has neither) ----------


@contextmanager
def _redis_server(workdir: Path, *args: str) -> Iterator[None]:
    """Run redis-server with ``args`` until the block ends; stopped by pid."""
    command = ["redis-server", "--save", "", "--appendonly", "no", "--dir", str(workdir), *args]
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def _wait_until_up(conn: RedisConnection, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.ping()
            return
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_unix_socket(tmp_path: Path, require_redis_server: None) -> None:
    path = tmp_path / "redis.sock"
    with _redis_server(tmp_path, "--port", "0", "--unixsocket", str(path)):
        url = f"unix://{path}?db=2"
        with RedisConnection.from_url(url) as conn:
            _wait_until_up(conn)
            assert conn.url() == url
            seg = _segments()
            conn.client.set("k", conn.bulk(seg))
            assert conn.once.get("k") == seg.join()
            assert conn.blocking.xread({"s": "$"}, block=100) in ([], {})
            kwargs = conn.client.connection_pool.connection_kwargs
            assert kwargs["db"] == 2
            assert conn.client.connection_pool.connection_class.__name__.startswith("ZeroCopyUnix")


def _issue(
    directory: Path,
    name: str,
    issuer: tuple[ec.EllipticCurvePrivateKey, x509.Name] | None = None,
    *,
    ca: bool = False,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    """Write ``name``.crt/.key: a certificate signed by ``issuer`` (self-signed without)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    signer_key, signer_name = issuer or (key, subject)
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(signer_key, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{name}.key").write_bytes(pem)
    return key, subject


def _tls_files(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca = _issue(tmp_path, "ca", ca=True)
    _issue(tmp_path, "server", ca, server=True)
    _issue(tmp_path, "client", ca)
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {name: tmp_path / name for name in names}


def test_tls_with_ca_and_client_certificate(tmp_path: Path, require_redis_server: None) -> None:
    files = _tls_files(tmp_path)
    port = _free_port()
    tls = ["--port", "0", "--tls-port", str(port), "--tls-auth-clients", "yes"]
    tls += ["--tls-cert-file", str(files["server.crt"]), "--tls-key-file", str(files["server.key"])]
    tls += ["--tls-ca-cert-file", str(files["ca.crt"])]
    query = urlencode(
        {
            "ssl_ca_certs": files["ca.crt"],
            "ssl_certfile": files["client.crt"],
            "ssl_keyfile": files["client.key"],
        }
    )
    with _redis_server(tmp_path, *tls):
        with RedisConnection.from_url(f"rediss://127.0.0.1:{port}/0?{query}") as conn:
            _wait_until_up(conn)
            assert conn.zero_copy
            pool = conn.client.connection_pool
            assert pool.connection_class.__name__ == "ZeroCopySSLConnection"
            seg = _segments()
            conn.client.set("k", conn.bulk(seg))
            assert conn.client.get("k") == seg.join()
        # Without the CA the server certificate cannot be verified.
        untrusted = RedisConnection.from_url(f"rediss://127.0.0.1:{port}/0")
        with untrusted, pytest.raises(BackendUnavailable):
            untrusted.ping()


def test_a_database_the_server_does_not_have_is_a_configuration_error(redis_url: str) -> None:
    # redis-server has 16 databases unless told otherwise
    settings = RedisSettings.from_url(redis_url).model_copy(update={"db": 99})
    with (
        RedisConnection(settings) as conn,
        pytest.raises(ConfigurationError, match="has no database 99"),
    ):
        conn.ping()


def test_a_cluster_node_behind_a_standalone_url_is_named_as_such(
    redis_cluster: EmbeddedRedis,
) -> None:
    """Before, a put failed with MovedError or succeeded depending on its key's slot."""
    from framework.store import RedisStore

    url = f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"
    named = r"is a node of a Redis Cluster.*redis\+cluster://"

    def put_many(store: RedisStore) -> None:
        for i in range(64):  # some of the keys hash to another master's slots
            store.put(i)

    with (
        RedisConnection.from_url(url) as conn,
        RedisStore("node", connection=conn) as store,
        pytest.raises(ConfigurationError, match=named),
    ):
        put_many(store)

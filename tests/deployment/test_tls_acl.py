"""Deployment beside an existing Redis: TLS, and ACL users restricted to the README's rules.

The test starts its own redis-server with TLS only (certificates generated here), creates
the README's producer, consumer and cell users verbatim (passwords substituted), and runs
each API as its role over ``rediss://``. Taking one permission away gives one clear error
naming the command and the key or channel.
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from framework.cell import BytesStream, Message, StreamCell
from framework.connection import RedisConnection
from framework.exceptions import PermissionDenied
from framework.objects import (
    ConsumerFactory,
    FLContext,
    ObjectConsumer,
    ObjectProducer,
    RedisStreamableEngine,
    ReturnCode,
    Shareable,
    make_reply,
)
from framework.pubsub import (
    RedisPublisher,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.pubsub._watched import RENEW_EVERY
from framework.settings import ENV_VAR
from framework.store import RedisStore, registered_stores, unregister_store
from framework.stream import StreamConsumer, StreamProducer
from tests.deployment.certs import Certificates, make_certificates

README = Path(__file__).resolve().parents[2] / "README.md"
ADMIN_PASSWORD = "admin/pw?1"
ROLE_PASSWORD = "r0le/pa?ss"
ROLES = ("producer", "consumer", "cell")


def readme_acl_rules() -> dict[str, list[str]]:
    """``{role: [rule, ...]}`` from the README's ``ACL SETUSER fw-<role> ...`` lines."""
    rules = {}
    for line in README.read_text().splitlines():
        match = re.match(r"ACL SETUSER fw-(\w+) (.*)$", line.strip())
        if match:
            rules[match.group(1)] = shlex.split(match.group(2))
    assert set(rules) == set(ROLES), f"README lists ACL users for {sorted(rules)}"
    return rules


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tls(certs: Certificates) -> dict[str, Any]:
    return {"ssl": True, "ssl_ca_certs": str(certs.ca)}


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, require_redis_server: None
) -> Iterator[tuple[int, Certificates]]:
    """redis-server listening only on a TLS port, clients' certificates optional."""
    directory = tmp_path_factory.mktemp("tls")
    certs = make_certificates(directory)
    port = _free_port()
    args = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(certs.server_cert), "--tls-key-file", str(certs.server_key)]
    args += ["--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "optional"]
    args += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    args += ["--requirepass", ADMIN_PASSWORD]
    server = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, password=ADMIN_PASSWORD, **_tls(certs))
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert server.poll() is None, "redis-server with TLS exited while starting"
                assert time.monotonic() < deadline, "redis-server with TLS did not start"
                time.sleep(0.05)
        client.close()
        yield port, certs
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture
def admin(tls_server: tuple[int, Certificates]) -> Iterator[redis.Redis]:
    port, certs = tls_server
    with redis.Redis(port=port, password=ADMIN_PASSWORD, **_tls(certs)) as client:
        client.flushall()
        for role in ROLES:
            client.acl_deluser(f"fw-{role}")
        yield client


def _create_users(admin: redis.Redis, drop: tuple[str, str] | None = None) -> None:
    """The README's users; ``drop=(role, rule)`` leaves one rule out."""
    for role, rules in readme_acl_rules().items():
        rules = [f">{ROLE_PASSWORD}" if r.startswith(">") else r for r in rules]
        rules = [r for r in rules if drop is None or (role, r) != drop]
        admin.execute_command("ACL", "SETUSER", f"fw-{role}", *rules)


def _url(role: str, tls_server: tuple[int, Certificates], *, client_cert: bool = False) -> str:
    port, certs = tls_server
    query = f"ssl_ca_certs={certs.ca}"
    if client_cert:
        query += f"&ssl_certfile={certs.client_cert}&ssl_keyfile={certs.client_key}"
    return f"rediss://fw-{role}:{ROLE_PASSWORD}@127.0.0.1:{port}/0?{query}"


@pytest.fixture
def users(admin: redis.Redis) -> None:
    _create_users(admin)


def _stream_objects(producer_url: str, consumer_url: str, durable: bool) -> list[Any]:
    objects: list[Any] = [{"i": i} for i in range(20)] + [b"x" * (1 << 20)]
    with (
        RedisConnection.from_url(producer_url) as pconn,
        RedisConnection.from_url(consumer_url) as cconn,
    ):
        subscriber: Any = (
            RedisStreamSubscriber(cconn, "results", group="workers", timeout=10)
            if durable
            else RedisSubscriber(cconn, "results", timeout=10)
        )
        publisher: Any = RedisStreamPublisher(pconn) if durable else RedisPublisher(pconn)
        with (
            StreamConsumer[Any](subscriber) as consumer,
            RedisStore("results", connection=pconn, ttl=600) as store,
            StreamProducer[Any](
                publisher, default_store=store, batch_size=5, heartbeat=0.5
            ) as producer,
        ):
            for index, obj in enumerate(objects):
                if index == 10:  # a heartbeat, then a message, renew the producer's records
                    time.sleep(RENEW_EVERY + 0.3)
                producer.send("results", obj)
            producer.close_topics("results")
            received = list(consumer.iter_objects())
            consumer.close(stores=True)  # also the store it rebuilt from the config
    assert received == objects
    return received


@pytest.mark.parametrize("durable", [False, True], ids=["pubsub", "durable"])
def test_object_streams_work_for_the_producer_and_consumer_roles(
    tls_server: tuple[int, Certificates],
    users: None,
    durable: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer_url = _url("consumer", tls_server)
    # The consumer rebuilds the producer's store from its password-free config and takes
    # its own credentials from the environment.
    monkeypatch.setenv(ENV_VAR, consumer_url)
    _stream_objects(_url("producer", tls_server, client_cert=True), consumer_url, durable)


def test_byte_streams_work_for_the_cell_role(
    tls_server: tuple[int, Certificates], users: None
) -> None:
    url = _url("cell", tls_server)
    payload = bytes(range(256)) * 12_000
    received: list[bytes] = []
    done = threading.Event()

    def on_stream(future: Any, stream: Any, resume_offset: int) -> None:
        received.append(b"".join(iter(lambda: bytes(stream.read(1 << 20)), b"")))
        done.set()

    with (
        RedisConnection.from_url(url) as conn,
        StreamCell(conn, "site-1") as site,
        StreamCell(conn, "server") as server,
    ):
        site.register_stream_cb("model", "weights", on_stream)
        future = server.send_stream("model", "weights", "site-1", Message({}, BytesStream(payload)))
        assert future.result(timeout=30) == len(payload)
        assert done.wait(10)
        blobs: list[bytes] = []
        site.register_blob_cb("model", "config", lambda f: blobs.append(bytes(f.result())))
        assert server.send_blob("model", "config", "site-1", Message({}, b"cfg")).result(30) == 3
    assert received == [payload]


def test_a_role_cannot_touch_another_roles_keys(
    tls_server: tuple[int, Certificates], users: None
) -> None:
    with RedisConnection.from_url(_url("cell", tls_server)) as conn:
        store = RedisStore("results", connection=conn)
        with pytest.raises(PermissionDenied) as info:
            store.put(b"not for cells")
        store.close()
    assert "fw:obj:{" in str(info.value)
    assert ROLE_PASSWORD not in str(info.value)


def _use_role(
    role: str, tls_server: tuple[int, Certificates], monkeypatch: pytest.MonkeyPatch
) -> None:
    if role == "cell":
        with (
            RedisConnection.from_url(_url("cell", tls_server)) as conn,
            StreamCell(conn, "server") as server,
        ):
            server.send_blob("model", "config", "site-1", Message({}, b"cfg"))
        return
    consumer_url = _url("consumer", tls_server)
    monkeypatch.setenv(ENV_VAR, consumer_url)
    try:
        _stream_objects(_url("producer", tls_server), consumer_url, durable=False)
    finally:
        for store in registered_stores():  # a failed producer leaves its spill store
            unregister_store(store)
            store.close()


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        (("cell", "+xadd"), ("XADD", "fw:cell:{site-1}:inbox")),
        (("producer", "&fw:topic:*"), ("PUBLISH", "topic 'results'")),
        (("producer", "~fw:obj:*"), ("SET", "fw:obj:{")),
    ],
)
def test_a_missing_permission_names_the_command_and_the_key_or_channel(
    tls_server: tuple[int, Certificates],
    admin: redis.Redis,
    drop: tuple[str, str],
    expected: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _create_users(admin, drop)
    with pytest.raises(PermissionDenied) as info:
        _use_role(drop[0], tls_server, monkeypatch)
    message = str(info.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message
    assert ROLE_PASSWORD not in message


class _Echo(ObjectConsumer):
    def consume(
        self, shareable: Shareable, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> tuple[bool, Shareable]:
        reply = make_reply(ReturnCode.OK)
        reply["n"] = shareable["n"]
        return True, reply


class _EchoFactory(ConsumerFactory):
    def get_consumer(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> ObjectConsumer:
        return _Echo()


class _Many(ObjectProducer):
    """``count`` objects: the first two carry 0 and 1 MB, the rest nothing."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.replies: list[int] = []

    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        n = len(self.replies)
        blob = b"b" * (n << 20) if n < 2 else b""
        return (Shareable({"n": n, "blob": blob}) if n < self.count else None), 10.0

    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        self.replies.append(replies["site-1"]["n"])
        return None


def test_the_object_protocol_works_for_the_cell_role(
    tls_server: tuple[int, Certificates], users: None
) -> None:
    # Many objects, so that workers acknowledge and delete what they read: that upkeep
    # once went with CLIENT REPLY SKIP, which this ACL denies; Redis then answered the
    # denial and the command, every later reply was taken for the one before it, and
    # most objects timed out.
    producer = _Many(30)
    with (
        RedisConnection.from_url(_url("cell", tls_server)) as conn,
        StreamCell(conn, "server") as server_cell,
        StreamCell(conn, "site-1") as site_cell,
        RedisStreamableEngine(server_cell) as server,
        RedisStreamableEngine(site_cell) as site,
    ):
        site.register_stream_processing("calc", "echo", _EchoFactory())
        rc, _ = server.stream_objects("calc", "echo", {}, ["site-1"], producer, FLContext())
    assert (rc, producer.replies) == (ReturnCode.OK, list(range(30)))

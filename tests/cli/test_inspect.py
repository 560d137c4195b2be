"""``framework inspect``: topics, transfers, cells and stored objects, read-only,
on a server and on every primary of a cluster."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis

from framework.cell import Message, StreamCell
from framework.cli._inspect import FOREIGN_LISTED, collect
from framework.connection import RedisConnection
from framework.pubsub import RedisQueuePublisher, RedisQueueSubscriber, RedisStreamPublisher
from framework.store import RedisStore
from tests.cli.conftest import acl_user
from tests.cli.helpers import run_cli


def _populate(conn: RedisConnection) -> int:
    """A topic with a group and a pending entry, a list topic, objects, and a transfer."""
    with RedisStreamPublisher(conn) as publisher:
        for i in range(3):
            publisher.send_message("metrics", b"event %d" % i)
    key = conn.keys.events("metrics")
    conn.client.xgroup_create(key, "workers", id="0")
    conn.client.xreadgroup("workers", "w1", {key: ">"}, count=1)  # one delivered, unacked
    with RedisQueuePublisher(conn) as queue:
        for i in range(3):
            queue.send_message("jobs", b"job %d" % i)
    # An object-stream producer's keys of the list topic: not subscribers.
    conn.client.hset(conn.keys.queue_end("jobs"), "P", "open:run:live")
    conn.client.set(conn.keys.queue_alive("jobs", "P"), "run", px=60_000)
    with RedisStore("inspect", connection=conn) as store:
        store.put(b"x" * 1000)
        store.put(b"y" * 10, ttl=600)
    with StreamCell(conn, "sender") as cell:
        future = cell.send_blob("files", "weights", "absent-site", Message({}, b"z" * 5000))
        sid = future.get_stream_id()
    return sid


def _readme_inspect_rules() -> list[str]:
    """The ACL rules the README gives for ``framework inspect``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"`framework inspect` needs `([^`]+)`", text)
    assert match, "the README names the ACL rules of framework inspect"
    return match.group(1).split()


def _read_only_commands_only(admin: redis.Redis) -> None:
    writes = {name.decode() if isinstance(name, bytes) else name for name in admin.acl_cat("write")}
    used = {name.removeprefix("cmdstat_").split("|")[0] for name in admin.info("commandstats")}
    assert used, "no command was counted"
    assert not used & writes, used & writes


def test_inspect_shows_everything_and_writes_nothing(
    tmp_path: Path, real_conn: RedisConnection, redis_url: str, admin: redis.Redis
) -> None:
    sid = _populate(real_conn)
    with RedisQueueSubscriber(real_conn, "jobs") as taker:
        assert taker.poll_message() == b"job 0"  # held in the taker's own key
        admin.config_resetstat()
        done = run_cli("inspect", "--json", tmp_path=tmp_path, url=redis_url)
        assert done.returncode == 0, done.stderr
        _read_only_commands_only(admin)
    data = json.loads(done.stdout)
    (topic,) = [t for t in data["topics"] if t["topic"] == "metrics"]
    assert (topic["kind"], topic["entries"], topic["groups"], topic["pending"]) == (
        "durable",
        3,
        1,
        1,
    )
    assert topic["lag"] == 2
    (jobs,) = [t for t in data["topics"] if t["topic"] == "jobs"]
    assert (jobs["kind"], jobs["entries"], jobs["subscribers"]) == ("list", 2, 1)
    (transfer,) = data["transfers"]
    assert transfer["stream_id"] == sid
    assert (transfer["sender"], transfer["targets"], transfer["size"]) == (
        "sender",
        ["absent-site"],
        5000,
    )
    assert transfer["progress"] == 0.0
    assert transfer["state"] == "cancel"  # the sender cell closed before anyone read it
    assert transfer["age_s"] is not None
    assert {"cell": "absent-site", "inbox": 1} in data["cells"]
    objects = data["stored_objects"]
    assert (objects["objects"], objects["without_ttl"]) == (2, 1)
    assert objects["bytes"] >= 1010

    readonly = _readme_inspect_rules()
    with acl_user(admin, int(redis_url.rsplit(":", 1)[1]), "inspector", *readonly) as url:
        as_reader = run_cli("inspect", "--json", tmp_path=tmp_path, url=url)
    assert as_reader.returncode == 0, as_reader.stderr
    as_read = json.loads(as_reader.stdout)
    assert [t["stream_id"] for t in as_read["transfers"]] == [sid]
    assert as_read["stored_objects"] == objects

    tables = run_cli("inspect", tmp_path=tmp_path, url=redis_url)
    assert tables.returncode == 0, tables.stderr
    for heading in ("Topics", "Transfers", "Cells", "Stored objects", "metrics", "absent-site"):
        assert heading in tables.stdout
    # Whole, to be copied: it was printed with thousands separators and cut with "…".
    assert f" {sid} " in tables.stdout, tables.stdout


def test_inspect_covers_every_primary_of_a_cluster(
    tmp_path: Path, cluster_conn: RedisConnection, cluster_url: str
) -> None:
    with RedisStore("inspect", connection=cluster_conn) as store:
        for i in range(30):
            store.put(b"o" * i)
    slots = {cluster_conn.client.keyslot(key) for key in cluster_conn.client.scan_iter("fw:obj:*")}
    assert len(slots) > 3  # the objects really are spread over the cluster
    done = run_cli("inspect", "--json", tmp_path=tmp_path, url=cluster_url)
    assert done.returncode == 0, done.stderr
    objects = json.loads(done.stdout)["stored_objects"]
    assert (objects["objects"], objects["bytes"]) == (30, sum(range(30)))


#: Keys under the prefix that the framework never wrote, and why each cannot be read.
FOREIGN = {
    "fw:xfer:{notanumber}:meta": "not a stream id",
    "fw:events:{t1}": "WRONGTYPE",
    "fw:queue:{q2}": "WRONGTYPE",
    "fw:cell:{x}:inbox": "WRONGTYPE",
    "fw:xfer:{1}:meta": "WRONGTYPE",
    # A name the framework never writes: before, only counted ("other_keys": 1).
    "fw:foo": "no key of this framework has this name",
}


def _foreign(client: redis.Redis) -> None:
    """:data:`FOREIGN` as strings, a transfer whose announcement is not JSON, a bad key name."""
    for key in FOREIGN:
        client.set(key, "x")
    client.hset("fw:xfer:{2}:meta", "announce", "{not json")
    client.set(b"fw:obj:{\xff}", b"x")


def _check_unreadable(data: dict[str, object]) -> None:
    rows = data["unreadable"]
    assert isinstance(rows, list)
    problems = {key: row["problem"] for row in rows for key in row["keys"]}
    for key, why in FOREIGN.items():
        assert why in problems.pop(key), (key, rows)
    assert "announcement of stream 2" in problems.pop("fw:xfer:{2}:meta")
    assert "not UTF-8" in problems.pop("fw:obj:{\\xff}")
    assert not problems, problems


@pytest.mark.parametrize("backend", ["fake", "real"])
def test_inspect_shows_everything_it_can_beside_foreign_keys(
    request: pytest.FixtureRequest, backend: str
) -> None:
    conn: RedisConnection = request.getfixturevalue(f"{backend}_conn")
    sid = _populate(conn)
    _foreign(conn.client)
    data = collect(conn)
    _check_unreadable(data)
    assert [t["stream_id"] for t in data["transfers"]] == [sid]
    assert {(t["topic"], t["kind"]) for t in data["topics"]} >= {
        ("metrics", "durable"),
        ("jobs", "list"),
    }
    assert {"cell": "absent-site", "inbox": 1} in data["cells"]
    assert data["stored_objects"]["objects"] == 2


def test_inspect_command_names_the_keys_it_could_not_read(
    tmp_path: Path, real_conn: RedisConnection, redis_url: str, admin: redis.Redis
) -> None:
    sid = _populate(real_conn)
    _foreign(admin)
    done = run_cli("inspect", "--json", tmp_path=tmp_path, url=redis_url)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    _check_unreadable(data)
    assert [t["stream_id"] for t in data["transfers"]] == [sid]
    tables = run_cli("inspect", tmp_path=tmp_path, url=redis_url)
    assert tables.returncode == 0, tables.stderr
    for shown in ("Unreadable", "fw:xfer:{notanumber}:meta", "fw:cell:{x}:inbox", "metrics"):
        assert shown in tables.stdout, tables.stdout


def test_many_foreign_keys_are_listed_up_to_a_bound_then_counted(
    fake_conn: RedisConnection,
) -> None:
    for i in range(FOREIGN_LISTED + 5):
        fake_conn.client.set(f"fw:demo:{i:02d}", "x")  # a nested prefix's keys, say
    rows = collect(fake_conn)["unreadable"]
    assert isinstance(rows, list)
    assert [row["name"] for row in rows[:2]] == ["fw:demo:00", "fw:demo:01"]
    assert rows[-1]["name"] == "5 more"
    assert len(rows) == FOREIGN_LISTED + 1

"""framework.cluster_keys: stream reads are routed on a cluster without asking for keys."""

from __future__ import annotations

from typing import Any

import pytest

from framework.cluster_keys import StreamKeysParser, stream_read_keys
from framework.connection import RedisConnection


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (("XREAD", "STREAMS", "a", "0-0"), ["a"]),
        (("XREAD", "COUNT", 8, "BLOCK", 250, "STREAMS", "a", "b", "1-0", "0-0"), ["a", "b"]),
        ((b"xread", b"count", b"1", b"streams", b"a", b"$"), [b"a"]),
        (("XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "NOACK", "STREAMS", "a", ">"), ["a"]),
        # Group and consumer names are any words, STREAMS included.
        (("XREADGROUP", "GROUP", "STREAMS", "STREAMS", "STREAMS", "k", ">"), ["k"]),
        # A key named like an option or like STREAMS is still a key.
        (("XREAD", "STREAMS", "STREAMS", "COUNT", "0", "0"), ["STREAMS", "COUNT"]),
    ],
)
def test_stream_read_keys_follow_streams(args: tuple[Any, ...], keys: list[Any]) -> None:
    assert stream_read_keys(args) == keys


@pytest.mark.parametrize(
    "args",
    [
        ("GET", "k"),
        ("XREAD", "STREAMS", "a", "b", "0-0"),  # odd: not a valid read
        ("XREAD", "STREAMS"),
        ("XREAD", "COUNT", 1),
        ("XREAD", "LIMIT", 1, "STREAMS", "a", "0"),  # an option it does not know
        ("XREADGROUP", "COUNT", 1, "STREAMS", "a", ">"),  # no GROUP
        (),
    ],
)
def test_anything_else_is_left_to_the_server(args: tuple[Any, ...]) -> None:
    assert stream_read_keys(args) is None


def test_the_parser_hands_other_commands_on() -> None:
    class Wrapped:
        def __init__(self) -> None:
            self.commands = {"get": {}}

        def get_keys(self, redis_conn: Any, *args: Any) -> list[Any]:
            return ["asked", redis_conn, *args]

    parser = StreamKeysParser(Wrapped())
    assert parser.get_keys("conn", "XREAD", "STREAMS", "a", "0") == ["a"]
    assert parser.get_keys("conn", "GET", "k") == ["asked", "conn", "GET", "k"]
    assert parser.commands == {"get": {}}


def _getkeys_calls(conn: RedisConnection) -> int:
    client = conn.client
    stats = client.execute_command("INFO", "commandstats", target_nodes=client.get_primaries())
    return sum(int(s.get("cmdstat_command|getkeys", {}).get("calls", 0)) for s in stats.values())


def test_cluster_stream_reads_skip_command_getkeys(cluster_conn: RedisConnection) -> None:
    client = cluster_conn.client
    assert isinstance(client.commands_parser, StreamKeysParser)
    eid = client.xadd("fw:test:{keys}:s", {"f": "v"})
    client.xgroup_create("fw:test:{keys}:s", "g", id="0")
    before = _getkeys_calls(cluster_conn)
    assert client.xread({"fw:test:{keys}:s": "0-0"}, count=1)[0][1][0][0] == eid
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("XREAD", "COUNT", 1, "STREAMS", "fw:test:{keys}:s", "0-0")
    assert pipe.execute()[0][0][1][0][0] == eid
    got = client.xreadgroup("g", "c", {"fw:test:{keys}:s": ">"}, count=1, block=10)
    assert got[0][1][0][0] == eid
    assert _getkeys_calls(cluster_conn) == before
    # Other commands with moving keys still ask the server, and still work.
    client.execute_command("SORT", "fw:test:{keys}:list", "STORE", "fw:test:{keys}:out")
    assert _getkeys_calls(cluster_conn) > before

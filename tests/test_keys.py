from __future__ import annotations

from framework.keys import KeySchema


def test_events_end_marker_shares_the_topics_hash_tag() -> None:
    keys = KeySchema("fw")
    assert keys.events("t") == "fw:events:{t}"
    assert keys.events_end("t") == "fw:events:{t}:end"
    assert keys.events_lost("t") == "fw:events:{t}:lost"

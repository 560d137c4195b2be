"""A flushed batch as messages: one, or several of bounded size in order (no Redis)."""

from __future__ import annotations

from typing import Any

import pytest

from framework.serialize import loads
from framework.stream._building import MESSAGE_BYTES, BatchBuilder, Item, Outgoing
from framework.stream.events import EndOfStreamEvent, NewObjectEvent, decode_message
from plugins.memory import MemoryStore

SECRET = b"k" * 32


def _builder(**kwargs: Any) -> BatchBuilder:
    options: dict[str, Any] = {
        "inline_limit": 64 << 10,
        "spill_store": None,
        "serializer": None,
        "secret": SECRET,
        "inline_objects": False,
    }
    return BatchBuilder("p", **(options | kwargs))


def _objects(outs: list[Outgoing], first_seq: int) -> tuple[list[Any], list[Any]]:
    """Every message decoded in order: the objects (or keys) and the events' types."""
    objects, kinds, seq = [], [], first_seq
    for out in outs:
        batch, parts = decode_message(out.message, secret=SECRET)
        assert batch.seq == seq
        seq = batch.next_seq
        assert out.next_seq == seq
        for event in batch.events:
            kinds.append(type(event).__name__)
            if isinstance(event, NewObjectEvent):
                objects.append(loads(parts[event.part]))
            elif not isinstance(event, EndOfStreamEvent):
                objects.append(event.key)
    return objects, kinds


def test_a_small_batch_is_one_message() -> None:
    items = [Item(bytes([i]) * 100, True, {}) for i in range(10)]
    [out] = _builder().build("t", items, store=None, eos=True, seq=3)
    assert out.final
    objects, kinds = _objects([out], 3)
    assert objects == [item.obj for item in items]
    assert kinds[-1] == "EndOfStreamEvent"


def test_a_big_inline_batch_is_split_into_bounded_messages_in_order() -> None:
    items = [Item(i.to_bytes(4, "big") * 256, True, {"i": i}) for i in range(3000)]
    outs = _builder().build("t", items, store=None, eos=True, seq=5)
    assert len(outs) >= 3
    # The estimate leaves room for the frame and the signature: every message fits.
    assert all(out.message.nbytes <= MESSAGE_BYTES + 4096 for out in outs)
    assert [out.final for out in outs] == [False] * (len(outs) - 1) + [True]
    objects, kinds = _objects(outs, 5)
    assert objects == [item.obj for item in items]
    assert kinds == ["NewObjectEvent"] * 3000 + ["EndOfStreamEvent"]
    assert outs[-1].next_seq == 5 + 3001


def test_an_object_bigger_than_a_message_goes_alone() -> None:
    big = b"x" * (MESSAGE_BYTES + 10)
    items = [Item(b"a", True, {}), Item(big, True, {}), Item(b"b", True, {})]
    outs = _builder(inline_limit=4 * MESSAGE_BYTES).build("t", items, store=None, eos=False, seq=0)
    assert len(outs) == 3
    assert _objects(outs, 0)[0] == [b"a", big, b"b"]
    assert not any(out.final for out in outs)


def test_store_writes_and_backlog_ride_with_the_first_message() -> None:
    store = MemoryStore("m")
    try:
        # Metadata makes key events big: 20,000 of them do not fit one message.
        items = [Item(i, True, {"label": f"{i:0>100}"}) for i in range(20_000)]
        outs = _builder().build("t", items, store=store, eos=True, seq=0)
        assert len(outs) > 1
        assert len(outs[0].stored) == 20_000
        assert all(not out.stored and not out.commands for out in outs[1:])
        keys, _ = _objects(outs, 0)
        assert [store.get(key) for key in keys] == list(range(20_000))
    finally:
        store.close()


@pytest.mark.parametrize("count", [1, 2])
def test_a_batch_of_few_big_objects_is_never_split_below_one_object(count: int) -> None:
    items = [Item(b"y" * (2 * MESSAGE_BYTES), True, {}) for _ in range(count)]
    outs = _builder(inline_limit=4 * MESSAGE_BYTES).build("t", items, store=None, eos=False, seq=0)
    assert len(outs) == count

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from framework.buffers import Segments
from framework.store.layout import MAX_PARTS, ObjectId, join_parts, split_frame


@pytest.mark.parametrize(
    ("nbytes", "part_size", "counted", "suffix"),
    [(0, 10, False, ""), (10, 10, False, ""), (11, 10, False, "-p2"), (95, 10, True, "-p10-r")],
)
def test_object_ids_announce_their_layout(
    nbytes: int, part_size: int, counted: bool, suffix: str
) -> None:
    oid = ObjectId.new(nbytes, part_size, counted=counted)
    assert str(oid) == oid.uid + suffix
    assert ObjectId.parse(str(oid)) == oid


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "A" * 32,
        "a" * 31,
        "a" * 32 + "-p1",
        "a" * 32 + "-p0",
        "a" * 32 + "-r-p2",
        "a" * 32 + f"-p{MAX_PARTS + 1}",
        "a" * 32 + "-p2\n",
        "../" + "a" * 32,
    ],
)
def test_foreign_ids_do_not_parse(text: str) -> None:
    assert ObjectId.parse(text) is None


def test_too_many_parts_is_refused() -> None:
    with pytest.raises(ValueError, match="parts"):
        ObjectId.new(MAX_PARTS * 10 + 1, 10, counted=False)


@given(
    chunks=st.lists(st.binary(max_size=50), max_size=8),
    part_size=st.integers(min_value=1, max_value=64),
)
def test_split_then_join_is_identity(chunks: list[bytes], part_size: int) -> None:
    frame = Segments(chunks)
    parts = split_frame(frame, part_size)
    assert all(p.nbytes <= part_size for p in parts)
    assert all(p.nbytes == part_size for p in parts[:-1])
    assert join_parts([p.join() for p in parts]) == b"".join(chunks)


def test_split_does_not_copy() -> None:
    data = bytearray(b"abcdefgh")
    parts = split_frame(Segments([data]), 3)
    data[0:1] = b"X"
    assert parts[0].join() == b"Xbc"

"""How one stored object is laid out over Redis values (pure logic, no I/O).

An object's serialized frame is written to ``fw:obj:{<oid>}``. A frame larger than
one Redis value may hold (``proto-max-bulk-len``, 512 MiB by default) is cut into
parts: part 0 stays at the object key and part ``n`` goes to ``fw:obj:{<oid>}:<n>``.
A fan-out object (``readers=N``) also has a counter at ``fw:obj:{<oid>}:readers``.
All of them share the object's hash tag, so they live in one cluster slot.

The object id records that layout, so a reader knows which keys to fetch without a
first round trip for a manifest::

    <32 hex digits>[-p<parts>][-r][-b]

``-p<parts>`` is present when the frame was split, ``-r`` when a read counter exists,
``-b`` when the stored value is not a frame but the object itself: an exact ``bytes``
kept unframed by an unsigned store, so it is written and read back without a copy.
This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any, NamedTuple

from framework.buffers import Segments

__all__ = [
    "MAX_PARTS",
    "MAX_VALUE_BYTES",
    "PART_BYTES",
    "Encoded",
    "ObjectId",
    "StagedBatch",
    "join_parts",
    "new_uid",
    "split_frame",
]

#: Largest value Redis accepts in one command (``proto-max-bulk-len`` default, 512 MiB).
MAX_VALUE_BYTES = 512 * 1024 * 1024
#: Default part size of a split object: just under the limit, and just under a power of
#: two, where jemalloc wastes nothing (REDIS_FACTS §2).
PART_BYTES = MAX_VALUE_BYTES - 1024
#: Most parts an object id may announce; bounds the work a forged key can cause.
MAX_PARTS = 1 << 16

_OID = re.compile(r"^([0-9a-f]{32})(?:-p([1-9][0-9]{0,5}))?(-r)?(-b)?$")


def new_uid() -> str:
    """A fresh object id of the simplest layout: 32 random hex digits."""
    return os.urandom(16).hex()


class ObjectId(NamedTuple):
    """The id of one stored object and the layout it announces.

    Attributes:
        uid: 32 lowercase hex digits, unique per object.
        parts: Number of Redis values the frame is split into (1 = not split).
        counted: True when a remaining-reads counter exists (``readers=N``).
        raw: True when the value is the object's exact ``bytes``, not a frame.
    """

    uid: str
    parts: int = 1
    counted: bool = False
    raw: bool = False

    @classmethod
    def new(
        cls,
        nbytes: int,
        part_size: int,
        *,
        counted: bool,
        raw: bool = False,
        uid: str | None = None,
    ) -> ObjectId:
        """Make a fresh id for a value of ``nbytes`` bytes cut into ``part_size`` parts.

        Args:
            nbytes: Size of the serialized frame (or raw value).
            part_size: Largest part, in bytes.
            counted: Whether the object gets a remaining-reads counter.
            raw: Whether the value is the object's bytes, unframed.
            uid: The id's unique part, if chosen already (a value signed for it).

        Returns:
            A new, unique object id.

        Raises:
            ValueError: If the frame would need more than :data:`MAX_PARTS` parts.
        """
        parts = 1 if nbytes <= part_size else math.ceil(nbytes / part_size)
        if parts > MAX_PARTS:
            raise ValueError(
                f"An object of {nbytes} bytes needs {parts} parts; at most {MAX_PARTS}."
            )
        return cls(uid or new_uid(), parts, counted, raw)

    @classmethod
    def parse(cls, oid: str) -> ObjectId | None:
        """Read an id back; ``None`` when ``oid`` is not one this layout produces."""
        match = _OID.fullmatch(oid)
        if match is None:
            return None
        if match.lastindex == 1:  # the common case: neither split nor counted
            return cls(match.group(1))
        parts = int(match.group(2) or 1)
        if (parts == 1 and match.group(2) is not None) or parts > MAX_PARTS:
            return None
        return cls(match.group(1), parts, match.group(3) is not None, match.group(4) is not None)

    def __str__(self) -> str:
        if self.parts == 1 and not self.counted and not self.raw:
            return self.uid
        split = f"-p{self.parts}" if self.parts > 1 else ""
        return f"{self.uid}{split}{'-r' if self.counted else ''}{'-b' if self.raw else ''}"


def split_frame(frame: Segments, part_size: int) -> list[Segments]:
    """Cut a frame into consecutive parts of at most ``part_size`` bytes, without copying.

    Args:
        frame: The serialized object.
        part_size: Largest part, in bytes (> 0).

    Returns:
        The parts in order; a single part when the frame fits (also when it is empty).
    """
    if frame.nbytes <= part_size:
        return [frame]
    parts: list[Segments] = []
    current: list[memoryview] = []
    room = part_size
    for view in frame.parts:
        while len(view):
            take = view[:room]
            current.append(take)
            view = view[len(take) :]
            room -= len(take)
            if room == 0:
                parts.append(Segments(current))
                current, room = [], part_size
    if current:
        parts.append(Segments(current))
    return parts


def join_parts(values: list[bytes]) -> bytearray:
    """Join the values of a split object into one buffer (one copy of each part)."""
    joined = bytearray(sum(len(v) for v in values))
    view = memoryview(joined)
    offset = 0
    for value in values:
        view[offset : offset + len(value)] = value
        offset += len(value)
    return joined


class Encoded(NamedTuple):
    """One object serialized by a store (:meth:`~framework.store.Store.encode`), not stored yet.

    Serializing first and storing later lets a caller refuse an object that cannot be
    serialized before it commits to storing anything (the stream producer does so in
    ``send``, so one bad object never takes the objects buffered before it down).

    Attributes:
        value: The value to store: a frame, or the object itself when ``raw``.
        raw: The value is an exact ``bytes`` object kept unframed (see ``-b`` above).
        uid: The object id a signed value is bound to (None when not signed): it is
            stored under that id's key, so storing it again rewrites that one object.
    """

    value: Segments | bytes
    raw: bool = False
    uid: str | None = None

    @property
    def nbytes(self) -> int:
        """Size of the value in bytes."""
        return len(self.value) if isinstance(self.value, bytes) else self.value.nbytes


class StagedBatch(NamedTuple):
    """The writes that store a batch of objects, for a caller to send in its own round trip.

    Attributes:
        keys: The objects' keys, in order.
        writes: ``(key, value)`` pairs to ``SET`` (in any order; each is idempotent).
        px: Lifetime of every value in milliseconds (``SET ... PX``); ``None`` for none.
    """

    keys: list[str]
    writes: list[tuple[str, Any]]
    px: int | None

    @property
    def commands(self) -> list[tuple[Any, ...]]:
        """The writes as Redis commands: ``("SET", key, value[, "PX", px])``."""
        expiry = () if self.px is None else ("PX", self.px)
        return [("SET", key, value, *expiry) for key, value in self.writes]

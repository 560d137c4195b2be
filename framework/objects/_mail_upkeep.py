"""The round trip of a mailbox read: deferred writes, acks and deletes, TTL refresh, the read.

Both readers of :mod:`framework.objects.mailbox` (:class:`~framework.objects.mailbox.Mailbox`
and its :class:`~framework.objects.mailbox.GroupReader`) read this way, so that the upkeep of
a mailbox and the replies of a worker cost no round trip of their own; their entries come
back parsed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from framework.objects.lane import Command, Lane
from framework.redis_streams import fields_of, stream_entries

if TYPE_CHECKING:
    from framework.objects.mailbox import Mailbox

__all__ = ["GROUP", "MailEntry", "Write", "mail_entries", "upkept_read"]

#: An entry of a mailbox: its id and its fields.
MailEntry = tuple[bytes, dict[bytes, Any]]
#: Consumer group that only exists so ``XGROUP CREATE ... MKSTREAM`` can make an empty stream.
GROUP = "engine"
#: A deferred write: a mailbox key and the fields to append to it.
Write = tuple[str, dict[bytes, Any]]


def upkept_read(
    box: Mailbox,
    lane: Lane,
    delete: list[bytes],
    refresh: bool,
    read: Command,
    writes: list[Write] | None = None,
    group: bool = False,
) -> tuple[bool, Any, list[bool]]:
    """Run ``read`` (an ``XREAD``/``XREADGROUP``) with upkeep, all in one round trip.

    ``writes`` are appended first (``XADD NOMKSTREAM``), then handled entries deleted (and
    first acknowledged in the group if ``group``) and the TTL refreshed, then the read.
    Deletes go unanswered (see :meth:`Lane.round_trip`), and so do the writes of a
    ``group`` reader: its replies, whose sender either reads them or is gone.

    Returns:
        Whether the refresh found the mailbox gone, the read's reply, and per write
        whether its mailbox existed (nothing for a ``group`` reader's writes).
    """
    posts = [_xadd(key, fields) for key, fields in writes or []]
    quiet: list[Command] = posts if group else []
    commands: list[Command] = [] if group else [*posts]
    if delete and group:
        quiet.append(("XACK", box.key, GROUP, *delete))
    if delete:
        quiet.append(("XDEL", box.key, *delete))
    if refresh:
        commands.append(("PEXPIRE", box.key, box.ttl_ms))
    commands.append(read)
    *done, reply = lane.round_trip(commands, quiet)
    written = [] if group else [eid is not None for eid in done[: len(posts)]]
    return refresh and not done[-1], reply, written


def _xadd(key: str, fields: dict[bytes, Any]) -> Command:
    return ("XADD", key, "NOMKSTREAM", "*", *[x for pair in fields.items() for x in pair])


def mail_entries(reply: Any) -> list[MailEntry]:
    """The entries of an ``XREAD``/``XREADGROUP`` reply, in order, fields as dicts."""
    return [(eid, fields_of(raw)) for _, batch in stream_entries(reply) for eid, raw in batch]

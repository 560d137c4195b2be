"""Authentication of a transfer's control data: HMAC-SHA256 with a per-transfer key.

Whoever can write to Redis can append to a transfer's ack stream and rewrite its
announcement. Without a check, a forged ``done`` ack makes a sender report bytes as
delivered that no receiver has, a forged ``cancel`` ends a healthy transfer, and a
rewritten announcement hands the genuine bytes to another callback with other headers.
When the cells hold a key, every MAC is made with a key derived from the cell key and
the stream id, so nothing of one transfer can be replayed into another, and each kind of
value carries its own domain: control entries (their JSON names kind, role, sender and
values), each receiver's acknowledged position (bound to that receiver's name, so one
receiver's position cannot pass for another's) and the announcement (every field: route,
origin, targets, size, headers, secure flag). This module does no I/O and imports no
Redis code.
"""

from __future__ import annotations

import hashlib
import hmac
import json

from framework.cell.frames import Announce
from framework.exceptions import MalformedFrameError

__all__ = [
    "MAC_BYTES",
    "BadAnnouncementError",
    "BadPositionError",
    "ControlAuth",
    "check_announcement",
]

#: Length of every MAC (HMAC-SHA256).
MAC_BYTES = 32
#: Domain separation: the derived key is used for this transfer's control data only.
_LABEL = b"framework.cell.control.v1\x00"
#: Prefix of an announcement's MAC input (a control's JSON starts with ``{``, a
#: position's with ``[``: the three never collide).
_ANNOUNCE = b"announce\x00"


class BadAnnouncementError(MalformedFrameError):
    """An announcement is not for this cell, or not authenticated with the cell key."""


class BadPositionError(MalformedFrameError):
    """A stored acknowledged position is not authenticated for its receiver and stream."""


class ControlAuth:
    """Signs and verifies the control data of one transfer.

    Args:
        key: The shared cell key.
        sid: The transfer's stream id; the MAC key is derived from both.
    """

    def __init__(self, key: bytes, sid: int) -> None:
        self._key = hmac.new(bytes(key), _LABEL + str(sid).encode(), hashlib.sha256).digest()

    def sign(self, raw: bytes) -> bytes:
        """The MAC of ``raw`` (a control entry's JSON bytes)."""
        return hmac.new(self._key, raw, hashlib.sha256).digest()

    def verify(self, raw: bytes, mac: bytes | None) -> bool:
        """True if ``mac`` authenticates ``raw`` (constant-time comparison)."""
        return mac is not None and hmac.compare_digest(self.sign(raw), mac)

    def sign_announce(self, raw: bytes) -> bytes:
        """The MAC of an announcement's JSON bytes."""
        return self.sign(_ANNOUNCE + raw)

    def verify_announce(self, raw: bytes, mac: bytes | None) -> bool:
        """True if ``mac`` authenticates the announcement ``raw``."""
        return self.verify(_ANNOUNCE + raw, mac)

    def sign_text(self, text: str, context: str) -> str:
        """``text`` with its MAC appended as hex (for values kept in a hash field).

        Args:
            text: The value.
            context: What the value is, e.g. its field name ``ack:<receiver>``; covered
                by the MAC but not stored, so a value copied to another field fails.
        """
        return f"{text} {self.sign(_bound(text, context)).hex()}"

    def open_text(self, signed: str, context: str) -> str | None:
        """The text of a :meth:`sign_text` value, or None when its MAC does not verify."""
        text, _, mac = signed.rpartition(" ")
        try:
            raw_mac = bytes.fromhex(mac)
        except ValueError:
            return None
        return text if self.verify(_bound(text, context), raw_mac) else None


def _bound(text: str, context: str) -> bytes:
    # JSON keeps the two parts apart whatever characters they hold.
    return json.dumps([context, text]).encode()


def check_announcement(
    ann: Announce, raw: bytes, mac: bytes | None, key: bytes | None, me: str, where: str
) -> None:
    """Check that cell ``me`` may act on an announcement it read.

    A cell that holds a key signs every announcement it sends. A receiver with a key
    requires a valid MAC on a secure announcement, and on any announcement that carries
    one; a plaintext announcement without a MAC is unauthenticated (a cell without a
    key sent it) and is taken only by cells that accept plaintext. A receiver without a
    key cannot check anything; a secure transfer is refused there for want of the key.

    Args:
        ann: The parsed announcement.
        raw: Its JSON bytes as stored.
        mac: The MAC stored with it, if any.
        key: This cell's key, if any.
        me: This cell's name.
        where: Names the entry in messages.

    Raises:
        BadAnnouncementError: If the announcement does not name ``me`` as a target, or
            its MAC is missing (secure) or does not verify.
    """
    what = f"The {where} (stream {ann.sid} from {ann.origin!r} on {ann.channel}/{ann.topic})"
    if me not in ann.targets:
        raise BadAnnouncementError(f"{what} is for {ann.targets}, not for cell {me!r}.")
    if key is None or (mac is None and not ann.secure):
        return
    if mac is None:
        raise BadAnnouncementError(
            f"{what} claims a secure transfer but carries no MAC: forged, or sent by an "
            "older build."
        )
    if not ControlAuth(key, ann.sid).verify_announce(raw, mac):
        raise BadAnnouncementError(
            f"{what} is not authenticated with the cell key: forged or altered "
            "(origin, route, targets, headers, size or secure flag)."
        )

"""Authentication of a transfer's control entries: HMAC-SHA256 with a per-transfer key.

Whoever can write to Redis can append to a transfer's ack stream. Without a check, a
forged ``done`` ack makes a sender report bytes as delivered that no receiver has, and a
forged ``cancel`` ends a healthy transfer. When a transfer is secure, both sides hold the
cell key, so every control entry (acks, heartbeats, cancel, close, error) and every
acknowledged position kept for resuming carries a MAC under a key derived from the cell
key and the stream id; entries of one transfer cannot be replayed into another. This
module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["MAC_BYTES", "ControlAuth"]

#: Length of every MAC (HMAC-SHA256).
MAC_BYTES = 32
#: Domain separation: the derived key is used for control entries and nothing else.
_LABEL = b"framework.cell.control.v1\x00"


class ControlAuth:
    """Signs and verifies the control entries of one transfer.

    Args:
        key: The shared cell key.
        sid: The transfer's stream id; the MAC key is derived from both.
    """

    def __init__(self, key: bytes, sid: int) -> None:
        self._key = hmac.new(bytes(key), _LABEL + str(sid).encode(), hashlib.sha256).digest()

    def sign(self, raw: bytes) -> bytes:
        """The MAC of ``raw`` (the entry's JSON bytes)."""
        return hmac.new(self._key, raw, hashlib.sha256).digest()

    def verify(self, raw: bytes, mac: bytes | None) -> bool:
        """True if ``mac`` authenticates ``raw`` (constant-time comparison)."""
        return mac is not None and hmac.compare_digest(self.sign(raw), mac)

    def sign_text(self, text: str) -> str:
        """``text`` with its MAC appended as hex (for values kept in a hash field)."""
        return f"{text} {self.sign(text.encode()).hex()}"

    def open_text(self, signed: str) -> str | None:
        """The text of a :meth:`sign_text` value, or None when its MAC does not verify."""
        text, _, mac = signed.rpartition(" ")
        try:
            raw_mac = bytes.fromhex(mac)
        except ValueError:
            return None
        return text if self.verify(text.encode(), raw_mac) else None

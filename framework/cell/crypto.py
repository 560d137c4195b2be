"""End-to-end chunk encryption for ``secure=True`` transfers (AES-GCM, optional extra).

Each chunk is sealed with a fresh random 96-bit nonce; the stream id, sequence number,
offset and last-chunk flag are bound in as associated data, so a chunk cannot be
replayed into another transfer or position, nor a stream cut short by a forged header.
The ``cryptography`` package is the optional extra
``framework[secure]``; without it, or without a key, :class:`EncryptionError` explains
what is missing. This module does no Redis I/O.
"""

from __future__ import annotations

import os
from typing import Any, Final

from framework.exceptions import EncryptionError

__all__ = ["AES_KEY_SIZES", "NONCE_BYTES", "TAG_BYTES", "ChunkCipher"]

#: Byte lengths of an AES key (AES-128, -192, -256).
AES_KEY_SIZES: Final = (16, 24, 32)
#: AES-GCM nonce length.
NONCE_BYTES = 12
#: AES-GCM authentication tag length appended to every sealed chunk.
TAG_BYTES = 16


class ChunkCipher:
    """Seals and opens chunks with a shared AES key.

    Args:
        key: 16, 24 or 32 bytes shared by sender and receivers; None raises.

    Raises:
        EncryptionError: If the key is missing or of the wrong length, or the
            ``cryptography`` package is not installed.
    """

    def __init__(self, key: bytes | None) -> None:
        if key is None:
            raise EncryptionError(
                "secure=True needs a shared key: pass key=<16, 24 or 32 bytes> "
                "to StreamCell on both sides."
            )
        if len(key) not in AES_KEY_SIZES:
            raise EncryptionError(f"An AES key has 16, 24 or 32 bytes, not {len(key)}.")
        self._aead = _aesgcm()(bytes(key))

    def seal(
        self, data: Any, sid: int, seq: int, off: int, last: bool = False
    ) -> tuple[str, bytes]:
        """Encrypt one chunk.

        Args:
            data: The plain bytes (any bytes-like object).
            sid: Stream id; with ``seq`` and ``off`` it forms the associated data.
            seq: Chunk sequence number.
            off: Offset of the chunk's first byte.
            last: Whether this is the stream's last chunk.

        Returns:
            The nonce (hex) and the ciphertext with its tag.
        """
        nonce = os.urandom(NONCE_BYTES)
        sealed: bytes = self._aead.encrypt(nonce, data, _aad(sid, seq, off, last))
        return nonce.hex(), sealed

    def open(
        self, data: Any, nonce: str | None, sid: int, seq: int, off: int, last: bool = False
    ) -> bytes:
        """Decrypt and authenticate one chunk.

        Args:
            data: The sealed bytes.
            nonce: The nonce (hex) from the chunk header.
            sid: Stream id.
            seq: Chunk sequence number.
            off: Offset of the chunk's first byte.
            last: Whether the header marks this chunk as the last.

        Returns:
            The plain bytes.

        Raises:
            EncryptionError: If the nonce is missing or the chunk fails authentication
                (wrong key, or altered or misplaced data).
        """
        if nonce is None:
            raise EncryptionError(
                f"Chunk {seq} of stream {sid} is not encrypted but the transfer is secure."
            )
        try:
            plain: bytes = self._aead.decrypt(bytes.fromhex(nonce), data, _aad(sid, seq, off, last))
        except Exception as exc:  # InvalidTag or a malformed nonce: both mean "reject"
            raise EncryptionError(
                f"Chunk {seq} of stream {sid} failed authentication: wrong key, or altered data."
            ) from exc
        return plain


def _aad(sid: int, seq: int, off: int, last: bool) -> bytes:
    return f"{sid}:{seq}:{off}:{int(last)}".encode()


def _aesgcm() -> Any:
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as exc:
        raise EncryptionError(
            "secure=True needs the 'cryptography' package: "
            "install the extra with pip install 'framework[secure]'."
        ) from exc
    return AESGCM

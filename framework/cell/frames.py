"""Wire envelopes of byte-stream transfers, and how errors cross them.

Three envelopes, each a pydantic model encoded as JSON with a ``v`` field:

* :class:`Announce` - one entry in the target cell's inbox stream (field ``a``) and a copy
  in the transfer's meta hash; it names the channel, topic, mode, size and headers.
* :class:`ChunkHeader` - field ``h`` of a chunk entry in the transfer's data stream; field
  ``d`` holds the chunk's raw bytes (never base64). The entry id is ``<seq + 1>-0``, so a
  retried ``XADD`` cannot duplicate a chunk.
* :class:`Control` - field ``c`` of an entry in the transfer's ack stream: acks from
  receivers, heartbeats from a sender whose source is slow, and cancel / close / error
  notices in both directions. Field ``m`` holds its MAC when the transfer is secure.

A Redis stream entry already frames its fields, so the generic 4-byte-length frame is
not needed here: the header and the body travel as two bulk strings and the body reaches
the reader as its own bytes object. Errors cross as type name and message, never
pickled. This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framework import exceptions as fx
from framework.exceptions import MalformedFrameError, StreamError, UnsupportedVersionError

__all__ = [
    "WIRE_VERSION",
    "Announce",
    "ChunkHeader",
    "Control",
    "decode",
    "entry_id",
    "error_from_wire",
    "seq_of",
]

#: Version of every envelope this module writes.
WIRE_VERSION: Final = 2

#: Field names inside stream entries.
ANNOUNCE_FIELD = b"a"
HEADER_FIELD = b"h"
DATA_FIELD = b"d"
CONTROL_FIELD = b"c"
MAC_FIELD = b"m"


class Envelope(BaseModel):
    """Base of the envelopes: frozen, strict about fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[2] = WIRE_VERSION


_M = TypeVar("_M", bound=Envelope)


class Announce(Envelope):
    """A transfer as announced to each target (and stored in the transfer's meta hash)."""

    sid: int
    origin: str
    channel: str
    topic: str
    mode: Literal["stream", "blob"]
    #: Total bytes; 0 means unknown (a receiver never allocates from it alone).
    size: int = Field(ge=0)
    headers: dict[str, Any] = Field(default_factory=dict)
    targets: list[str]
    chunk_size: int = Field(gt=0)
    window: int = Field(gt=0)
    secure: bool = False
    optional: bool = False


class ChunkHeader(Envelope):
    """The JSON header of one chunk frame."""

    seq: int = Field(ge=0)
    #: Offset of the chunk's first plain byte in the stream.
    off: int = Field(ge=0)
    #: Plain bytes in the chunk.
    len: int = Field(ge=0)
    #: Bytes on the wire (differs from ``len`` when encrypted).
    wlen: int = Field(ge=0)
    #: CRC-32C (Castagnoli, hardware-accelerated) of the bytes on the wire.
    crc: int
    last: bool = False
    #: AES-GCM nonce (hex) when the chunk is encrypted.
    nonce: str | None = None


ControlKind = Literal["ack", "beat", "cancel", "close", "error"]


class Control(Envelope):
    """An entry of the ack stream.

    ``role`` tells the sending side (``tx``) from receivers (``rx``); ``sender`` names the
    cell. ``ack``: receiver ``sender`` consumed chunks up to ``seq`` (``off`` bytes);
    ``done`` marks its final ack, sent once its application is done with the data.
    ``beat``: the sender is alive although its source has nothing new, or a receiver is
    although its application, busy with the data, reads nothing; ``seq`` numbers each
    side's heartbeats in increasing order, and the other side acts on each number once.
    ``cancel`` /
    ``close`` / ``error``: that side ended the transfer; ``etype``/``msg`` say why.
    """

    kind: ControlKind
    role: Literal["tx", "rx"]
    sender: str
    seq: int = -1
    off: int = 0
    done: bool = False
    etype: str = ""
    msg: str = ""


def decode(model: type[_M], raw: bytes | str, what: str) -> _M:
    """Parse one JSON envelope and check its version.

    Args:
        model: The envelope class.
        raw: The JSON text read from Redis.
        what: Names the entry in error messages (e.g. ``"stream 7 chunk header"``).

    Returns:
        The validated envelope.

    Raises:
        UnsupportedVersionError: If the envelope's ``v`` is not :data:`WIRE_VERSION`.
        MalformedFrameError: If the envelope is not valid JSON of the expected shape.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        version = _version_of(raw)
        if version != WIRE_VERSION:
            # A newer envelope may add fields; report the version, not the shape.
            raise UnsupportedVersionError(
                f"The {what} has wire version {version!r}, this build speaks {WIRE_VERSION}."
            ) from exc
        fields = ", ".join(sorted({str(e["loc"][0]) for e in exc.errors() if e["loc"]}))
        raise MalformedFrameError(
            f"The {what} is malformed: {exc.error_count()} invalid field(s)"
            + (f" ({fields})." if fields else " (not a JSON object).")
        ) from exc


def _version_of(raw: bytes | str) -> object:
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json parses
        return WIRE_VERSION
    return parsed.get("v") if isinstance(parsed, dict) else WIRE_VERSION


def entry_id(seq: int) -> str:
    """Deterministic stream entry id of chunk ``seq`` (ids start at ``1-0``; ``0-0`` is invalid)."""
    return f"{seq + 1}-0"


def seq_of(entry: bytes | str) -> int:
    """Inverse of :func:`entry_id`."""
    text = entry.decode() if isinstance(entry, bytes) else entry
    return int(text.split("-", 1)[0]) - 1


#: Exceptions that may be rebuilt by type name when they cross the wire.
_WIRE_ERRORS: dict[str, type[fx.FrameworkError]] = {
    cls.__name__: cls
    for cls in (
        fx.StreamError,
        fx.StreamCancelled,
        fx.StreamTimeout,
        fx.BlobSizeError,
        fx.ChecksumError,
        fx.SequenceError,
        fx.TruncatedFrameError,
        fx.UnsupportedVersionError,
        fx.MalformedFrameError,
        fx.EncryptionError,
        fx.SecurityError,
        fx.BackendError,
        fx.BackendUnavailable,
        fx.BackendTimeout,
    )
}


def error_from_wire(etype: str, msg: str, where: str) -> fx.FrameworkError:
    """Rebuild an error reported by the other side.

    Only the framework's own stream and framing errors are rebuilt by name; anything
    else (a user callback's ``KeyError``, say) becomes a :class:`StreamError` whose
    message names the original type. Nothing is imported or unpickled.

    Args:
        etype: The remote exception's type name.
        msg: Its message.
        where: Who reported it, for the message (e.g. ``"Receiver 'b' of stream 7"``).

    Returns:
        The exception to raise or store locally.
    """
    cls = _WIRE_ERRORS.get(etype)
    if cls is None:
        return StreamError(f"{where} failed with {etype}: {msg}")
    return cls(f"{where} reported: {msg}")

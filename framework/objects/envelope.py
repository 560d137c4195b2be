"""Wire envelope of the object protocol, and how a payload is bound to it.

Every message of a session - an object (``data``), a target's ``reply``, the sender's
``end`` or ``abort`` - is an :class:`Envelope` (pydantic, JSON, versioned) plus a payload
framed by :func:`framework.serialize.dumps`. The payload's frame ``meta`` repeats every
field of the envelope; when a shared secret is set the frame is HMAC-signed, so an
envelope cannot be altered (rerouted to another channel or topic, a reply marked as
ending the session, an end given another return code) or a signed payload replayed
under another session or sequence number. The envelope names the cells it is
addressed to and when it was sent, so a signed message copied into another cell's
mailbox is refused there, and a receiver can tell an old session start replayed
after it forgot the session (:class:`~framework.objects.session.Tombstones`). On a
mailbox (a Redis stream) the envelope is field ``h`` and the payload field ``p``; on a
byte stream the envelope is the header ``fw_obj`` and the payload the blob. This module
does no I/O and imports no Redis code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framework.buffers import BytesLike, Segments
from framework.exceptions import (
    ConfigurationError,
    FramingError,
    SecurityError,
    SerializationError,
)
from framework.framing import decode_frame
from framework.serialize import dumps, loads_with_meta
from framework.serializers import PickleSerializer

__all__ = [
    "BLOB_HEADER",
    "ENVELOPE_FIELD",
    "MAX_NAME",
    "PAYLOAD_FIELD",
    "WIRE_VERSION",
    "Envelope",
    "Kind",
    "addressed_to",
    "check_route",
    "decode_envelope",
    "open_payload",
    "seal_payload",
    "verify_payload",
]

logger = logging.getLogger(__name__)

#: Version of the envelope this module writes.
WIRE_VERSION: Final = 4
#: Mailbox entry fields.
ENVELOPE_FIELD: Final = b"h"
PAYLOAD_FIELD: Final = b"p"
#: Header of a byte-stream message that carries an envelope.
BLOB_HEADER: Final = "fw_obj"

Kind = Literal["data", "reply", "end", "abort"]
#: A cell name as an envelope carries it.
#: Longest cell name, channel or topic an envelope carries.
MAX_NAME: Final = 512

CellName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class Envelope(BaseModel):
    """Who sent what, in which session, at which position.

    Attributes:
        kind: ``data`` (an object), ``reply``, ``end`` (normal end) or ``abort``.
        tx: Session id (random, hex).
        seq: Sequence number of the object (a reply repeats its object's number); on
            an ``end`` or ``abort``, the number of objects sent.
        origin: Cell name of the engine that wrote the message (where replies go).
        to: Cell names the message is addressed to (every target of a fan-out: the
            payload is written once for all of them).
        at: The sender's clock (seconds since the epoch) when the message was first
            sent; a resend repeats it.
        channel: App channel of the session.
        topic: App topic of the session.
        rc: Return code of an ``end`` or ``abort``.
        timeout: Seconds the sender waits for the replies to this object.
        ended: On a reply: the target's session ended with this object.
        secure: The payload travelled encrypted.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal[4] = WIRE_VERSION
    kind: Kind
    tx: str = Field(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")
    seq: int = Field(ge=0)
    origin: CellName
    to: tuple[CellName, ...]
    at: float = Field(ge=0, allow_inf_nan=False)
    channel: str = Field("", max_length=MAX_NAME)
    topic: str = Field("", max_length=MAX_NAME)
    rc: str | None = Field(None, max_length=64)
    timeout: float | None = Field(None, gt=0)
    ended: bool = False
    secure: bool = False

    def describe(self) -> str:
        """``session <tx> seq <n> from <origin> on <channel>/<topic>`` for log lines."""
        where = f" on {self.channel}/{self.topic}" if self.channel or self.topic else ""
        return f"{self.kind} of session {self.tx} seq {self.seq} from {self.origin!r}{where}"

    def binding(self) -> dict[str, Any]:
        """The envelope as the payload frame repeats (and signs) it in its ``meta``.

        Every field a receiver acts on is here, not just the message's identity: the
        envelope itself travels unsigned (mailbox field ``h``, byte-stream header).
        """
        return self.model_dump(mode="json")


def addressed_to(env: Envelope, name: str) -> bool:
    """Whether ``env`` is addressed to cell ``name`` (logged when it is not).

    A message in a cell's mailbox that names other cells was copied there: with a
    secret its envelope is signed, so it was written for those cells.
    """
    if name in env.to:
        return True
    logger.warning("Ignoring the %s: it is addressed to %s, not %r.", env.describe(), env.to, name)
    return False


def check_route(channel: Any, topic: Any, targets: Any = ()) -> None:
    """Refuse a channel, topic or target that no envelope could carry.

    Raises:
        ConfigurationError: Naming the argument and what is wrong with it.
    """
    for what, value in (("channel", channel), ("topic", topic)):
        if not isinstance(value, str) or len(value) > MAX_NAME:
            raise ConfigurationError(
                f"The {what} must be a string of at most {MAX_NAME} characters, not {value!r:.80}."
            )
    for target in targets:
        if not isinstance(target, str) or not 0 < len(target) <= MAX_NAME:
            raise ConfigurationError(
                f"A target must be a cell name of 1 to {MAX_NAME} characters, not {target!r:.80}."
            )


def decode_envelope(raw: Any, what: str) -> Envelope:
    """Parse an envelope from JSON text or a JSON-decoded dict.

    Args:
        raw: Mailbox field ``h`` (bytes/str) or the ``fw_obj`` header (dict).
        what: Names the message in errors, e.g. ``"mailbox entry b'1-0'"``.

    Raises:
        FramingError: If it is missing, not valid, or of another wire version.
    """
    if raw is None:
        raise FramingError(f"The {what} carries no object-protocol envelope.")
    try:
        if isinstance(raw, dict):
            return Envelope.model_validate(raw)
        return Envelope.model_validate_json(raw)
    except ValidationError as exc:
        fields = sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})
        raise FramingError(
            f"The {what} has an invalid envelope (bad field(s): {', '.join(fields) or '?'})."
        ) from exc


def seal_payload(env: Envelope, obj: Any, secret: bytes | None) -> Segments:
    """Frame ``obj`` for ``env`` (signed with ``secret`` when given).

    Raises:
        SerializationError: If ``obj`` cannot be serialized; the message names the
            message and the key whose value is the culprit.
    """
    try:
        return dumps(obj, secret=secret, meta=env.binding())
    except SerializationError as exc:
        cause = exc.__cause__ or exc
        raise SerializationError(
            f"The {env.describe()} cannot be serialized: {_culprit(obj)} cannot be "
            f"pickled ({type(cause).__name__}: {cause})."
        ) from exc


def _culprit(obj: Any) -> str:
    """Which part of a payload does not pickle (looked for only once pickling failed)."""
    # An object travels as (Shareable, stream_ctx or None); a reply as a Shareable.
    parts = (
        [("its Shareable", obj[0]), ("its stream_ctx", obj[1])] if isinstance(obj, tuple) else []
    )
    for where, part in parts or [("the Shareable", obj)]:
        for key, value in part.items() if isinstance(part, dict) else ():
            try:
                PickleSerializer().serialize(value)
            except SerializationError:
                return f"the value of key {key!r} of {where}"
    return "its payload"


def open_payload(
    env: Envelope, data: BytesLike | Segments, secret: bytes | None, allow_pickle: bool
) -> Any:
    """Verify and deserialize the payload of ``env``.

    Raises:
        FramingError: If the frame is malformed, or bound to another message or
            envelope.
        SecurityError: If a secret is set and the MAC is missing or wrong.
        DeserializationError: If the payload cannot be deserialized.
    """
    check = _bound_to(env, secret)
    return loads_with_meta(data, secret=secret, allow_pickle=allow_pickle, check_meta=check)[1]


def verify_payload(env: Envelope, data: BytesLike | Segments, secret: bytes | None) -> None:
    """Check the payload of ``env`` as :func:`open_payload` does, without deserializing it.

    For an ``end`` or ``abort`` notice, whose payload carries nothing: its signature
    (with a secret) and its binding to the envelope are all that matter, so a
    receiver's pickle policy has nothing to refuse there.

    Raises:
        FramingError: If the frame is malformed, or bound to another message or
            envelope.
        SecurityError: If a secret is set and the MAC is missing or wrong.
    """
    header, _ = decode_frame(data, secret=secret)
    meta = header.get("meta")
    _bound_to(env, secret)(meta if isinstance(meta, dict) else {})


def _bound_to(env: Envelope, secret: bytes | None) -> Callable[[dict[str, Any]], None]:
    """A ``check_meta`` refusing a payload frame that is not bound to ``env``."""
    binding = env.binding()

    def check(meta: dict[str, Any]) -> None:
        # Checked before anything is deserialized (unpickled): only a forged, altered or
        # misrouted message gets here; with a secret, meta is signed.
        if meta != binding:
            kind = SecurityError if secret is not None else FramingError
            raise kind(
                f"The payload of the {env.describe()} belongs to another message or "
                f"envelope ({meta})."
            )

    return check

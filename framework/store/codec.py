"""Objects to stored frames and back (pure, no I/O).

Every stored value is a :func:`framework.serialize.dumps` frame; this module only
binds a store's serializer and secret to :func:`~framework.serialize.dumps` and
:func:`~framework.serialize.loads`. Small raw values (exact ``bytes``, ``bytearray``
and ``str``) are fast there, for every caller, so the store knows nothing of the
frame layout.

A frame signed with the store's secret itself (not with an object's key) is accepted
only if it carries no ``meta``: a store never writes any, and the other users of a
shared secret always do (object-protocol payloads are bound to their envelope), so a
signed message copied over a stored object is refused, not returned as that object.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from framework.buffers import BytesLike, Segments
from framework.exceptions import BadSignatureError, SecurityError
from framework.serialize import dumps, get_serializer, loads

#: Derives the key that signs one object from the store's secret and the object's id.
_OBJECT_LABEL = b"framework store object v1:"

__all__ = ["FrameCodec"]


class FrameCodec:
    """Turns objects into frames and frames into objects for one store.

    Args:
        serializer: Name of a registered serializer (``"auto"``, ``"pickle"``...).
        secret: Shared HMAC key; frames are signed and verified.

    Raises:
        ConfigurationError: If no serializer has that name.
    """

    def __init__(self, serializer: str = "auto", secret: bytes | None = None) -> None:
        self.serializer = get_serializer(serializer)
        self.secret = secret
        self.allow_pickle = serializer in ("auto", "pickle") or bool(
            getattr(self.serializer, "unpickles", False)
        )

    def object_secret(self, uid: str) -> bytes | None:
        """The key that signs object ``uid`` (None without a secret).

        Each object's frame is signed with a key of its own, derived from the store's
        secret and the object's id: a valid value copied to another object's key (by
        anyone who can write to the backend) fails verification there.
        """
        if self.secret is None:
            return None
        return hmac.new(self.secret, _OBJECT_LABEL + uid.encode(), hashlib.sha256).digest()

    def encode(self, obj: Any, uid: str | None = None) -> Segments:
        """Serialize ``obj`` into a frame, signed for object ``uid`` if given.

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
        """
        secret = self.secret if uid is None else self.object_secret(uid)
        return dumps(obj, serializer=self.serializer, secret=secret)

    def decode(self, value: BytesLike, uid: str | None = None, *, allow_pickle: bool = True) -> Any:
        """Deserialize a frame (verifying its MAC when the codec has a secret).

        Args:
            value: The frame.
            uid: The id of the object it is stored as: a frame signed for another
                object is refused. One signed with the store's key itself (stored
                without an id, as :meth:`BaseStore._write` stores) is accepted if it
                carries no ``meta`` (it was signed as a stored object).
            allow_pickle: False refuses a frame whose serializer unpickles, whatever
                the store's serializer (the reader's choice; a store that does not
                pickle refuses such frames anyway).

        Raises:
            SecurityError: If the codec has a secret and the frame is unsigned,
                altered, or signed for another object or purpose.
            DeserializationError: If the frame cannot be turned back into an object.
            FramingError: If the value is not a frame.
        """
        pickles = self.allow_pickle and allow_pickle
        if self.secret is None:
            return loads(value, allow_pickle=pickles)
        if uid is None:
            try:
                return loads(value, secret=self.secret, allow_pickle=pickles, check_meta=_stored)
            except _ForeignFrame as foreign:
                raise BadSignatureError(str(foreign)) from None
        try:
            return loads(value, secret=self.object_secret(uid), allow_pickle=pickles)
        except BadSignatureError as bound:
            try:  # signed with the store's key itself: stored without an id
                return loads(value, secret=self.secret, allow_pickle=pickles, check_meta=_stored)
            except _ForeignFrame as foreign:
                raise BadSignatureError(f"{foreign} (Checked as object {uid}.)") from None
            except SecurityError:
                pass
            raise BadSignatureError(
                f"{bound} (Checked as object {uid}: it was altered, or signed for another "
                "object and copied to this one's key.)"
            ) from None


class _ForeignFrame(BadSignatureError):
    """A frame signed with the store's secret, but not as a stored object."""


def _stored(meta: dict[str, Any]) -> None:
    """Refuse a frame signed with a store's secret that a store did not write.

    Raises:
        BadSignatureError: If the frame carries ``meta``, which only other users of
            the secret sign (an object-protocol payload bound to its envelope).
    """
    if meta:
        raise _ForeignFrame(
            "The frame is signed with the store's secret but carries message metadata "
            f"(keys {sorted(meta)}), which a store never writes: it was signed for another "
            "purpose (an object-protocol message, say) and copied here."
        )

"""Objects to stored frames and back (pure, no I/O).

Every stored value is a :func:`framework.serialize.dumps` frame; this module only
binds a store's serializer and secret to :func:`~framework.serialize.dumps` and
:func:`~framework.serialize.loads`. Small raw values (exact ``bytes``, ``bytearray``
and ``str``) are fast there, for every caller, so the store knows nothing of the
frame layout.
"""

from __future__ import annotations

from typing import Any

from framework.buffers import BytesLike, Segments
from framework.serialize import dumps, get_serializer, loads

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

    def encode(self, obj: Any) -> Segments:
        """Serialize ``obj`` into a frame.

        Raises:
            SerializationError: If ``obj`` cannot be serialized.
        """
        return dumps(obj, serializer=self.serializer, secret=self.secret)

    def decode(self, value: BytesLike) -> Any:
        """Deserialize a frame (verifying its MAC when the codec has a secret).

        Raises:
            SecurityError: If the codec has a secret and the frame is unsigned or altered.
            DeserializationError: If the frame cannot be turned back into an object.
            FramingError: If the value is not a frame.
        """
        return loads(value, secret=self.secret, allow_pickle=self.allow_pickle)

"""Byte streams between named cells over Redis: NVFlare F3's ``StreamCell`` API.

Example:
    ::

        cell = StreamCell(connection, "server")
        future = cell.send_blob("ch", "model", "site-1", Message({"round": 3}, payload))
        future.result(timeout=60)  # bytes delivered to site-1

See :class:`StreamCell` for the receiving side (``register_stream_cb``, ``register_blob_cb``).
"""

from __future__ import annotations

from framework.cell.cell import StreamCell
from framework.cell.config import CellConfig
from framework.cell.streams import BlobStream, BytesStream, FileStream, IterStream
from framework.cell.types import Message, MessageHeaderKey, Stream, StreamFuture, StreamTaskSpec
from framework.exceptions import BlobSizeError, StreamCancelled, StreamError, StreamTimeout

__all__ = [
    "BlobSizeError",
    "BlobStream",
    "BytesStream",
    "CellConfig",
    "FileStream",
    "IterStream",
    "Message",
    "MessageHeaderKey",
    "Stream",
    "StreamCancelled",
    "StreamCell",
    "StreamError",
    "StreamFuture",
    "StreamTaskSpec",
    "StreamTimeout",
]

"""The object protocol: NVFlare's ``nvflare.apis.streaming`` over Redis.

A sender's :class:`ObjectProducer` streams :class:`Shareable` objects to other cells
through :meth:`RedisStreamableEngine.stream_objects`; on each target the
:class:`ConsumerFactory` registered for the channel and topic makes an
:class:`ObjectConsumer` per session, whose replies go back to the producer.

Example:
    ::

        with RedisStreamableEngine(StreamCell(conn, "server")) as engine:
            rc, result = engine.stream_objects(
                "model", "weights", {}, ["site-1", "site-2"], producer, FLContext()
            )
"""

from __future__ import annotations

from framework.objects.api import ConsumerFactory, ObjectConsumer, ObjectProducer, StreamableEngine
from framework.objects.config import EngineConfig
from framework.objects.context import FLContext, FLContextKey, Signal, StreamContextKey
from framework.objects.engine import RedisStreamableEngine
from framework.objects.shareable import ReservedHeaderKey, ReturnCode, Shareable, make_reply

__all__ = [
    "ConsumerFactory",
    "EngineConfig",
    "FLContext",
    "FLContextKey",
    "ObjectConsumer",
    "ObjectProducer",
    "RedisStreamableEngine",
    "ReservedHeaderKey",
    "ReturnCode",
    "Shareable",
    "Signal",
    "StreamContextKey",
    "StreamableEngine",
    "make_reply",
]

"""Move Python objects and byte streams between processes through Redis.

The public API, re-exported from the layer modules:

* object store and lazy proxies (ProxyStore's ``Store``): :class:`RedisStore`, :class:`Proxy`
* object streams (ProxyStore's ``proxystore.stream``): :class:`StreamProducer`,
  :class:`StreamConsumer` over :class:`RedisPublisher`/:class:`RedisSubscriber` (pub/sub)
  or :class:`RedisStreamPublisher`/:class:`RedisStreamSubscriber` (durable)
* byte streams (NVFlare's ``StreamCell``): :class:`StreamCell`, :class:`Stream`,
  :class:`StreamFuture`, :class:`Message`
* object protocol (NVFlare's ``apis.streaming``): :class:`RedisStreamableEngine` streaming
  :class:`Shareable` objects from an :class:`ObjectProducer` to an :class:`ObjectConsumer`
* plumbing: :class:`RedisSettings`, :class:`RedisConnection`, :class:`EmbeddedRedis`,
  :func:`dumps`/:func:`loads`, and the exception tree rooted at :class:`FrameworkError`.
"""

from __future__ import annotations

import logging

from framework.cell import (
    BlobStream,
    BytesStream,
    CellConfig,
    FileStream,
    IterStream,
    Message,
    Stream,
    StreamCell,
    StreamFuture,
    StreamTaskSpec,
)
from framework.connection import RedisConnection
from framework.embedded import EmbeddedRedis
from framework.exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BacklogFullError,
    BadSignatureError,
    ConfigurationError,
    FrameworkError,
    HeartbeatLapsedError,
    MessageLossError,
    MissingSignatureError,
    ObjectNotFoundError,
    PermissionDenied,
    ProxyResolveError,
    ProxyResolveMissingKeyError,
    ReceiveTimeout,
    StoreExistsError,
    StreamCancelled,
    StreamError,
    TopicClosedError,
)
from framework.objects import (
    ConsumerFactory,
    EngineConfig,
    FLContext,
    ObjectConsumer,
    ObjectProducer,
    RedisStreamableEngine,
    ReturnCode,
    Shareable,
    Signal,
    StreamableEngine,
    StreamContextKey,
    make_reply,
)
from framework.pubsub import (
    QueuePublisher,
    QueueSubscriber,
    RedisPublisher,
    RedisQueuePublisher,
    RedisQueueSubscriber,
    RedisStreamPublisher,
    RedisStreamSubscriber,
    RedisSubscriber,
)
from framework.serialize import dumps, loads
from framework.settings import RedisSettings
from framework.store import (
    MISSING,
    Proxy,
    RedisConnector,
    RedisStore,
    Store,
    StoreConfig,
    extract,
    get_or_create_store,
    is_resolved,
    resolve,
)
from framework.stream import NullFilter, SamplingFilter, StreamConsumer, StreamProducer

#: The distribution's version; pyproject.toml reads it from here.
__version__ = "0.1.0"

__all__ = [
    "MISSING",
    "AuthenticationFailed",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BacklogFullError",
    "BadSignatureError",
    "BlobStream",
    "BytesStream",
    "CellConfig",
    "ConfigurationError",
    "ConsumerFactory",
    "EmbeddedRedis",
    "EngineConfig",
    "FLContext",
    "FileStream",
    "FrameworkError",
    "HeartbeatLapsedError",
    "IterStream",
    "Message",
    "MessageLossError",
    "MissingSignatureError",
    "NullFilter",
    "ObjectConsumer",
    "ObjectNotFoundError",
    "ObjectProducer",
    "PermissionDenied",
    "Proxy",
    "ProxyResolveError",
    "ProxyResolveMissingKeyError",
    "QueuePublisher",
    "QueueSubscriber",
    "ReceiveTimeout",
    "RedisConnection",
    "RedisConnector",
    "RedisPublisher",
    "RedisQueuePublisher",
    "RedisQueueSubscriber",
    "RedisSettings",
    "RedisStore",
    "RedisStreamPublisher",
    "RedisStreamSubscriber",
    "RedisStreamableEngine",
    "RedisSubscriber",
    "ReturnCode",
    "SamplingFilter",
    "Shareable",
    "Signal",
    "Store",
    "StoreConfig",
    "StoreExistsError",
    "Stream",
    "StreamCancelled",
    "StreamCell",
    "StreamConsumer",
    "StreamContextKey",
    "StreamError",
    "StreamFuture",
    "StreamProducer",
    "StreamTaskSpec",
    "StreamableEngine",
    "TopicClosedError",
    "dumps",
    "extract",
    "get_or_create_store",
    "is_resolved",
    "loads",
    "make_reply",
    "resolve",
]

# A library never configures logging; without a handler of the application, records are
# dropped instead of reaching the "last resort" stderr handler.
logging.getLogger(__name__).addHandler(logging.NullHandler())

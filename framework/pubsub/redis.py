"""Redis pub/sub publisher and subscriber (sharded on a cluster, following slot owners).

Pub/sub is at-most-once: a message published while a subscriber is disconnected
is gone. What this module adds is that such a loss is never silent. redis-py
reconnects and resubscribes a dropped subscriber by itself, without telling the
caller (REDIS_FACTS §1); the server then confirms the resubscription, and
:class:`RedisSubscriber` turns that confirmation into a
:class:`~framework.exceptions.MessageLossError` raised once from
:meth:`~RedisSubscriber.next_message`, after which the stream carries on. The
stream layer's sequence numbers reveal which events were lost.

Channels are ``<prefix>:topic:{<topic>}`` (:meth:`framework.keys.KeySchema.topic`).
``PUBLISH``/``SPUBLISH`` go through the connection's ``once`` client: a publish
is never retried blindly.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

import redis

from framework._raw import PinnedConnection
from framework._timeouts import checked_timeout
from framework.buffers import Segments
from framework.connection import MAX_BLOCK_MS, MAX_OUTAGE, RedisConnection, mapped_errors
from framework.exceptions import (
    BackendTimeout,
    BackendUnavailable,
    MessageLossError,
    ReceiveTimeout,
)
from framework.pubsub._atomic import run_atomic
from framework.pubsub._outage import Outage, outage_note
from framework.pubsub._probe import PROBE_MESSAGE, Probe
from framework.pubsub._sharded import ShardedSubscription
from framework.pubsub._shim import RedisShim, connect, split_topic_args, topic_tuple, wait_limit
from framework.pubsub.protocols import UNSET, Unset

__all__ = ["RedisPublisher", "RedisSubscriber"]

logger = logging.getLogger(__name__)

#: Seconds within which the confirmations of one resubscription arrive (one per channel);
#: a confirmation after all of them, or later than this, starts another interruption.
COALESCE_S: Final = 1.0
#: Pause (s) between attempts while the connection is down.
RETRY_PAUSE_S: Final = 0.2

_DATA: Final = frozenset({"message", "smessage"})
_CONFIRM: Final = frozenset({"subscribe", "ssubscribe"})


class RedisPublisher(RedisShim):
    """Publish messages on Redis pub/sub channels, one channel per topic.

    Built with a :class:`RedisConnection`, or as in ProxyStore with
    ``RedisPublisher(hostname, port, **kwargs)`` (its own connection, closed by
    :meth:`close`; ``kwargs`` are :class:`~framework.settings.RedisSettings` fields).

    Args:
        connection: Where to publish; not closed by the publisher (unless built by
            :meth:`from_url`). Oversized inline objects are spilled to a store on it.
            Or ProxyStore's ``hostname``.
        port: ProxyStore's form only: the port.
        sharded: Use ``SPUBLISH`` (sharded pub/sub). Defaults to True on a cluster,
            where messages then stay within the channel's shard.
        kwargs: ProxyStore's form only: further Redis settings.

    Attributes:
        connection: The connection in use.
        heartbeats: True: a :class:`~framework.stream.StreamProducer` sends heartbeats
            on its open topics, since a subscriber hears nothing else from a producer
            that was killed.
    """

    accepts_segments: Final = True
    heartbeats: Final = True

    def __init__(
        self,
        connection: RedisConnection | str | None = None,
        port: int | None = None,
        *,
        sharded: bool | None = None,
        **kwargs: Any,
    ) -> None:
        connection, self._owns_connection = connect(connection, port, kwargs)
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self._sharded = connection.is_cluster if sharded is None else sharded
        self._publish = "SPUBLISH" if self._sharded else "PUBLISH"
        # One round trip per message: a connection of its own skips the pool's cost.
        self._pinned = PinnedConnection(connection.once)

    @classmethod
    def from_url(cls, url: str, *, sharded: bool | None = None) -> RedisPublisher:
        """Connect to ``url`` and return a publisher that owns (and closes) that connection."""
        publisher = cls(RedisConnection.from_url(url), sharded=sharded)
        publisher._owns_connection = True
        return publisher

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Publish ``message`` on the topic's channel, once (no retry).

        Args:
            topic: The topic.
            message: The message; segments are sent without being joined.

        Raises:
            BackendError: If Redis failed; the message may or may not have been sent.
        """
        self.publish(topic, message)

    def publish(
        self,
        topic: str,
        message: bytes | Segments,
        *,
        commands: Sequence[tuple[Any, ...]] = (),
        final: bool = False,
        source: str = "",
        retry: bool = False,
    ) -> None:
        """Run the store's ``commands``, then publish ``message``, atomically.

        See :class:`~framework.pubsub.AtomicPublisher`; ``final``, ``source`` and
        ``retry`` change nothing on pub/sub (consumers see the end-of-stream event
        itself and drop a duplicate by its sequence numbers).

        Raises:
            BackendError: If Redis failed or refused a write (then nothing was published).
        """
        channel = self.connection.keys.topic(topic)
        tail = [(self._publish, channel, self.connection.bulk(message))]
        # Name a key and the channel: an ACL denial does not say which one it was.
        what = f"publish to topic {topic!r} ({self._publish} {channel!r})"
        if commands:
            first = (
                f"{_text(commands[0][0])} {_text(commands[0][1])!r}" if len(commands[0]) > 1 else ""
            )
            more = " ..." if len(commands) > 1 else ""
            what = f"store {len(commands)} value(s) ({first}{more}) and {what}"
        with self._errors(what, command=self._publish):
            run_atomic(self.connection, commands, tail, pinned=self._pinned)

    def _release(self) -> None:
        self._pinned.close()


class RedisSubscriber(RedisShim):
    """Receive messages from Redis pub/sub channels, reporting interruptions.

    The subscription is confirmed by the server before the constructor returns,
    so anything published afterwards reaches it. Waits are sliced into
    ``MAX_BLOCK_MS`` polls, so :meth:`close` from another thread ends a blocked
    :meth:`next_message` within a second.

    Built with a :class:`RedisConnection` and topics, or as in ProxyStore with
    ``RedisSubscriber(hostname, port, topic, **kwargs)`` (its own connection, closed
    by :meth:`close`; ``kwargs`` are :class:`~framework.settings.RedisSettings` fields).

    Args:
        connection: Where to subscribe (its ``blocking`` client; one connection
            per subscriber, per node on a cluster). Or ProxyStore's ``hostname``.
        args: The topic, or a sequence of topics (also ``topic=``); in ProxyStore's
            form the port (also ``port=``) and then the topic(s).
        timeout: Longest wait (s) of :meth:`next_message`; ``None`` waits forever.
        sharded: Use ``SSUBSCRIBE``; defaults to True on a cluster.
        max_outage: Seconds the subscription may stay down (Redis unreachable, or on a
            cluster a slot without a reachable owner) before :meth:`next_message`
            raises ``BackendUnavailable``; it keeps trying, and raises again after as
            long again.
        kwargs: ProxyStore's form only: ``port``/``topic`` by keyword and further
            Redis settings.

    Attributes:
        topics: The topics subscribed to.
        complete: True: a subscriber sees every message of its topics in order
            (unless interrupted, which it reports).

    Raises:
        ConfigurationError: If no topic is given, or ``topic`` is not a str or an
            iterable of non-empty str.
        BackendError: If subscribing failed.
    """

    complete: Final = True

    def __init__(
        self,
        connection: RedisConnection | str | None = None,
        *args: Any,
        timeout: float | None = None,
        sharded: bool | None = None,
        max_outage: float = MAX_OUTAGE,
        **kwargs: Any,
    ) -> None:
        port, topic = split_topic_args(connection, args, kwargs)
        self.topics = topic_tuple(topic)
        connection, self._owns_connection = connect(connection, port, kwargs)
        self.connection = connection
        # The URL is computed once: mapped_errors() needs it only for messages.
        self._errors = functools.partial(mapped_errors, url=connection.url())
        self._timeout = checked_timeout(timeout, type(self).__name__)
        self._sharded = connection.is_cluster if sharded is None else sharded
        self._lock = threading.Lock()
        # Data read before next_message() could return it: during the subscription's
        # confirmations, or under a loss report.
        self._stash: deque[bytes] = deque()
        self._interrupted = False
        self._last_confirm = float("-inf")  # the first resubscription always counts
        self._confirms_left = 0  # confirmations still due from the current resubscription
        self._outage = Outage(max_outage)
        self._receiving = f"receive from topic(s) {list(self.topics)!r}"
        self._probe = Probe(connection.settings.socket_timeout, time.monotonic())
        channels = [connection.keys.topic(t) for t in self.topics]
        with self._errors(f"subscribe to topic(s) {list(self.topics)!r}"):
            if self._sharded and connection.is_cluster:  # channels follow their slots' owners
                self._follower: ShardedSubscription | None = ShardedSubscription.start(
                    connection, self.topics, errors=self._errors, max_outage=max_outage
                )
            else:
                self._follower, self._pubsub = None, connection.blocking.pubsub()
                subscribe = self._pubsub.ssubscribe if self._sharded else self._pubsub.subscribe
                subscribe(*channels)
        self._channels = len(set(channels))
        self._await_confirmations(self._channels)
        self._listening_since: float | None = time.monotonic()

    @property
    def listening_since(self) -> float | None:
        """Monotonic time since which the subscription has been up; None while it is down.

        Down from a failed read until the server confirms the resubscription: messages
        published meanwhile are lost, heartbeats included, so a consumer does not count
        that time as a producer's silence.
        """
        return self._listening_since if self._follower is None else self._follower.listening_since

    @property
    def _outage_since(self) -> float | None:
        """Since when Redis (on a cluster, a subscribed slot's owner) has been unreachable."""
        return self._outage.since if self._follower is None else self._follower.down_since

    @classmethod
    def from_url(
        cls,
        url: str,
        topic: str | Sequence[str],
        *,
        timeout: float | None = None,
        sharded: bool | None = None,
        max_outage: float = MAX_OUTAGE,
    ) -> RedisSubscriber:
        """Connect to ``url`` and return a subscriber that owns (and closes) that connection."""
        connection = RedisConnection.from_url(url)
        try:
            subscriber = cls(
                connection, topic, timeout=timeout, sharded=sharded, max_outage=max_outage
            )
        except BaseException:
            connection.close()
            raise
        subscriber._owns_connection = True
        return subscriber

    def _await_confirmations(self, count: int) -> None:
        deadline = time.monotonic() + self.connection.settings.socket_timeout
        while count > 0:
            if time.monotonic() > deadline:
                self.close()
                raise BackendTimeout(f"Redis did not confirm the subscription to {self.topics}.")
            message = self._poll(MAX_BLOCK_MS / 1000)
            if message is not None and message["type"] in _CONFIRM:
                count -= 1
            elif message is not None and message["type"] in _DATA:
                # A channel already confirmed (another cluster node) has a message: keep it.
                self._stash.append(message["data"])

    def __iter__(self) -> RedisSubscriber:
        return self

    def __next__(self) -> bytes:
        return self.next_message()

    def next_message(self, *, timeout: float | Unset | None = UNSET) -> bytes:
        """Return the next message of any subscribed topic.

        Args:
            timeout: Overrides the constructor's timeout for this call.

        Returns:
            The message bytes.

        Raises:
            StopIteration: If the subscriber is (or gets) closed.
            ReceiveTimeout: If nothing arrived in time.
            MessageLossError: Once per interruption of the subscription (the
                connection dropped and redis-py resubscribed): anything published
                meanwhile was lost. The next call carries on.
            BackendUnavailable: If the subscription stayed down for ``max_outage``.
        """
        limit = wait_limit(timeout, self._timeout, type(self).__name__)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                if self._closed:
                    raise StopIteration
                if self._stash:
                    return self._stash.popleft()
                left = MAX_BLOCK_MS / 1000 if deadline is None else deadline - time.monotonic()
                message = self._poll(min(max(left, 0.0), MAX_BLOCK_MS / 1000))
                data = self._handle(message)
                if data is not None:
                    return data
                if deadline is not None and time.monotonic() >= deadline:
                    raise ReceiveTimeout(
                        f"No message on topic(s) {self.topics} within {limit} s."
                        + outage_note(self._outage_since)
                    )

    def poll_message(self) -> bytes | None:
        """Return the next message if one is already waiting, else ``None``.

        Raises:
            StopIteration: If the subscriber is closed.
            MessageLossError: As :meth:`next_message`.
        """
        with self._lock:
            if self._closed:
                raise StopIteration
            if self._stash:
                return self._stash.popleft()
            while True:  # skip confirmations: a data message may follow at once
                message = self._poll(0)
                data = self._handle(message)
                if data is not None or message is None:
                    return data

    def _handle(self, message: dict[str, Any] | None) -> bytes | None:
        """Return a data message's payload; note resubscriptions; raise a pending loss."""
        kind = None if message is None else message["type"]
        if kind in _CONFIRM:
            # One resubscription confirms each channel once; anything after that, however
            # soon, is the next interruption (a flapping connection loses each time).
            now = time.monotonic()
            if self._confirms_left <= 0 or now - self._last_confirm > COALESCE_S:
                self._interrupted = True
                self._confirms_left = self._channels
            self._confirms_left -= 1
            self._last_confirm = now
            self._listening_since = now
            return None
        data: bytes | None = message["data"] if kind in _DATA and message else None
        loss = None if self._follower is None else self._follower.take_loss()
        if self._interrupted or loss is not None:
            self._interrupted = False
            if data is not None:
                self._stash.append(data)
            raise loss or MessageLossError(
                f"The subscription to topic(s) {list(self.topics)!r} was interrupted (the "
                "connection to Redis dropped and was re-established): messages published "
                "meanwhile were possibly lost.",
                topic=self.topics[0],
                possible=True,
            )
        return data

    def _poll(self, wait: float) -> dict[str, Any] | None:
        """One bounded wait for a message; rides out an unreachable Redis for ``max_outage``."""
        if self._follower is not None:  # it follows dropped channels, within its own budget
            return self._follower.poll(wait)
        try:
            with self._errors(self._receiving):
                message = self._read(wait)
        except BackendUnavailable:
            # redis-py reconnects and resubscribes on the next read; the server's
            # confirmation then reports the interruption (see _handle).
            self._listening_since = None
            if self._outage.failed():
                raise
            logger.warning("Subscription to %s dropped; reconnecting", list(self.topics))
            if self.connection.is_cluster:
                self._move_to_another_node()
            time.sleep(RETRY_PAUSE_S)
            return None
        self._outage.ended()
        return message

    def _move_to_another_node(self) -> None:
        """Classic pub/sub on a cluster: subscribe on another node than the failed one.

        Every node relays classic pub/sub messages, so any live one will do; redis-py
        would reconnect to the failed node's address forever. Its confirmation reports
        the interruption (see :meth:`_handle`); should this node fail too, the next
        failure moves on again.
        """
        cluster = self.connection.blocking
        failed = getattr(self._pubsub, "node", None)
        others = [n for n in cluster.get_nodes() if failed is None or n.name != failed.name]
        if not others:
            return
        node = random.choice(others)
        channels = list(self._pubsub.channels)
        try:
            with self._errors("close a failed subscription"):
                self._pubsub.reset()
        except BackendUnavailable:
            logger.debug("The failed subscription's connection was already gone")
        self._pubsub = cluster.pubsub(node=node)
        logger.warning("Subscribing to %s on cluster node %s instead", list(self.topics), node.name)
        try:
            with self._errors(f"subscribe to topic(s) {list(self.topics)!r}"):
                self._pubsub.subscribe(*channels)
        except BackendUnavailable:  # the next read fails too, and moves on again
            logger.debug("Cluster node %s is unreachable too", node.name)

    def _read(self, wait: float) -> dict[str, Any] | None:
        """One read; a silent connection is probed, and dropped if the probe goes unanswered.

        Raises:
            redis.ConnectionError: The probe went unanswered (see :mod:`._probe`); the
                next read connects and subscribes again.
        """
        if self._sharded:
            message: dict[str, Any] | None = self._pubsub.get_sharded_message(
                timeout=wait / max(1, len(self.topics))
            )
        else:
            message = self._pubsub.get_message(timeout=wait)
        if self._probe.observe(message is not None, lambda: self._pubsub.ping(PROBE_MESSAGE)):
            if self._pubsub.connection is not None:  # the next read connects afresh
                self._pubsub.connection.disconnect()
            raise redis.ConnectionError(self._probe.failure)
        return message

    def _release(self) -> None:
        """Unsubscribe (thread-safe).

        A :meth:`next_message` blocked in another thread returns within
        ``MAX_BLOCK_MS`` by raising ``StopIteration``.
        """
        with self._lock:
            pubsub = getattr(self, "_follower", None) or getattr(self, "_pubsub", None)
            if pubsub is not None:
                try:
                    with self._errors("close a subscription"):
                        pubsub.close()
                except BackendUnavailable:
                    logger.debug("The subscription's connection was already gone")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

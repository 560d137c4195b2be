"""Sharded pub/sub subscriptions that follow their slots' owners on a Redis Cluster.

A sharded channel lives on the master that owns its hash slot. redis-py's
``ClusterPubSub`` subscribes each channel on the node that owned the slot at the
time and stays there: after that node dies it reconnects to the dead address
forever, and when a failover or a reshard makes the node hand the slot over, Redis
sends an unrequested ``sunsubscribe`` that redis-py drops without a word. Either
way the messages published from then on are lost, silently. (redis-py 8 can also
reconcile its shard subscriptions after a slot-map refresh, but on a worker thread
of its own, touching pubsub objects that must not be shared between threads, and
only when something else happens to refresh the map.)

:class:`ShardedSubscription` therefore keeps one plain ``PubSub`` per node, itself,
and knows for every channel where it is subscribed and whether the server
confirmed it. A channel is *dropped* when its node's connection fails (a node that
stops answering a silent connection's PING too: a hung node, see :mod:`._probe`) or the
node unsubscribes it. It is then subscribed again on the master that owns its slot now,
found by refreshing redis-py's slot map; its confirmation makes it *recovered*,
and :meth:`~ShardedSubscription.take_loss` turns the recovered channels into one
:class:`~framework.exceptions.MessageLossError` (possible), before anything those
channels deliver afterwards. Nothing here reads from another thread: the
subscriber calls every method under its own lock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Final

import redis

from framework.connection import RedisConnection
from framework.exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendUnavailable,
    MessageLossError,
    PermissionDenied,
)
from framework.pubsub._probe import PROBE_MESSAGE, Probe

__all__ = ["FOLLOW_PAUSE_S", "ShardedSubscription"]

logger = logging.getLogger(__name__)

#: Least time (s) between two rounds of refreshing the slot map and resubscribing,
#: except that the first round after a channel drops runs at once.
FOLLOW_PAUSE_S: Final = 1.0

#: ``errors(what, command=...)``: the subscriber's mapping of redis-py exceptions.
Errors = Callable[..., AbstractContextManager[None]]


class ShardedSubscription:
    """``SSUBSCRIBE`` to channels on a Redis Cluster, following each slot's owner.

    Args:
        cluster: The ``RedisCluster`` client whose nodes to subscribe on.
        topics: Channel name -> topic, for every channel to subscribe to.
        errors: Maps redis-py exceptions raised in its block (see ``mapped_errors``).
        max_outage: Seconds a channel may stay without a subscription before
            :meth:`poll` raises ``BackendUnavailable`` (then it counts afresh).
        confirm_timeout: Seconds a node has to confirm a subscription before it
            counts as unreachable.

    Attributes:
        listening_since: Monotonic time since which every channel has been
            subscribed; None while one is not.
        down_since: Monotonic time of the first round that found a channel without a
            subscription, since which none could be renewed; None otherwise.
    """

    def __init__(
        self,
        cluster: Any,
        topics: Mapping[bytes, str],
        *,
        errors: Errors,
        max_outage: float,
        confirm_timeout: float,
    ) -> None:
        self._cluster = cluster
        self._topics = dict(topics)
        self._errors = errors
        self._max_outage = max_outage
        self._confirm_timeout = confirm_timeout
        self._pubsubs: dict[str, Any] = {}  # node name -> its PubSub
        self._probes: dict[str, Probe] = {}  # node name -> its connection's liveness
        self._node: dict[bytes, str] = {}  # channel -> node it is subscribed on (or asked)
        self._sent: dict[bytes, float] = {}  # channel awaiting confirmation -> when asked
        self._up: set[bytes] = set()  # confirmed on its node
        self._seen: set[bytes] = set()  # confirmed at least once: a drop may lose messages
        self._recovered: set[bytes] = set()  # dropped and back, not yet reported
        self._urgent = False  # a recovered channel delivers: report before that
        self._ready: deque[tuple[str, dict[str, Any]]] = deque()  # read checking other nodes
        self._due = False  # a confirmed channel dropped: resubscribe without a pause
        self._last_round = float("-inf")
        self.down_since: float | None = None
        self._turn = 0  # where the round-robin over the nodes resumes
        self.listening_since: float | None = None

    @classmethod
    def start(
        cls,
        connection: RedisConnection,
        topics: Sequence[str],
        *,
        errors: Errors,
        max_outage: float,
    ) -> ShardedSubscription:
        """Subscribe to the channels of ``topics`` on ``connection``'s ``blocking`` cluster.

        A node has the connection's socket timeout to confirm a subscription.

        Raises:
            BackendError: If a node could not be asked (everything is released then).
        """
        channels = {connection.keys.topic(topic).encode(): topic for topic in topics}
        subscription = cls(
            connection.blocking,
            channels,
            errors=errors,
            max_outage=max_outage,
            confirm_timeout=connection.settings.socket_timeout,
        )
        subscription.subscribe()
        return subscription

    def subscribe(self) -> None:
        """Ask each channel's current owner for it; :meth:`poll` returns the confirmations.

        Raises:
            BackendError: If a node could not be asked (everything is released then).
        """
        try:
            for channel in self._topics:
                with self._errors(f"subscribe to topic {self._topics[channel]!r}"):
                    self._subscribe(channel)
        except BaseException:
            self.close()
            raise

    def poll(self, wait: float) -> dict[str, Any] | None:
        """Read one message from the nodes (at most ``wait`` s), following dropped channels.

        Returns:
            A data message, the first confirmation of a channel (as redis-py returns
            them), or None: nothing arrived, or only what is handled here did.

        Raises:
            BackendUnavailable: If a channel has stayed without a subscription for
                ``max_outage`` seconds: its slot has no reachable owner.
            AuthenticationFailed: If a node refused the credentials.
            PermissionDenied: If the ACL user may not subscribe to a channel.
        """
        started = time.monotonic()
        self._follow(started)
        if self._ready:
            return self._sorted(*self._ready.popleft())
        names = list(self._pubsubs)
        if not names:  # every channel is waiting for an owner: wait for the next round
            pause = self._last_round + FOLLOW_PAUSE_S - started
            time.sleep(max(0.0, min(wait, pause)))
            return None
        # Round-robin: start after the node that last delivered, so none is starved.
        start = self._turn % len(names)
        for index, name in enumerate(names[start:] + names[:start]):
            if name not in self._pubsubs:  # dropped while another node was read
                continue
            left = max(0.0, started + wait - time.monotonic())
            message = self._read(name, left / len(names))
            if message is not None:
                self._turn = start + index + 1
                return self._sorted(name, message)
        return None

    def take_loss(self) -> MessageLossError | None:
        """The loss to report for the channels that came back, once; None if none is due.

        Due once no other subscription is awaiting its confirmation (channels that
        drop together are reported together), or at once when a recovered channel
        has a message to deliver.
        """
        if not self._recovered or (self._sent and not self._urgent):
            return None
        topics = [topic for channel, topic in self._topics.items() if channel in self._recovered]
        self._recovered.clear()
        self._urgent = False
        return MessageLossError(
            f"The sharded subscription to topic(s) {topics!r} was interrupted (the connection "
            "to their cluster node dropped, or the node gave up their slot in a failover or "
            "resharding) and was renewed on the slot's current owner: messages published "
            "meanwhile were possibly lost.",
            topic=topics[0],
            possible=True,
        )

    def close(self) -> None:
        """Close every node's subscription (idempotent; a dead node's is just dropped)."""
        for name in list(self._pubsubs):
            self._discard(name)
        self._node.clear()
        self._sent.clear()
        self._up.clear()
        self._ready.clear()
        self._recovered.clear()

    # --- following ------------------------------------------------------------------------

    def _follow(self, now: float) -> None:
        """Resubscribe dropped channels, if due; raise once the failure budget is spent."""
        for channel, asked in list(self._sent.items()):
            name = self._node.get(channel)
            if name is not None and now - asked > self._confirm_timeout:
                self._drop_node(name, f"no confirmation within {self._confirm_timeout} s")
        down = [channel for channel in self._topics if channel not in self._node]
        if not down or (not self._due and now < self._last_round + FOLLOW_PAUSE_S):
            return
        self._due, self._last_round = False, now
        self.down_since = self.down_since or now
        error = self._resubscribe(down)
        down = [channel for channel in self._topics if channel not in self._node]
        if down and now - self.down_since >= self._max_outage:
            self.down_since = None
            topics = [self._topics[channel] for channel in down]
            raise BackendUnavailable(
                f"No master of the Redis Cluster took the subscription to topic(s) {topics!r} "
                f"within {self._max_outage} s, trying every {FOLLOW_PAUSE_S} s ({error}): "
                "messages published on them meanwhile are lost. The subscriber keeps trying; "
                "the call that finds them subscribed again reports the loss."
            ) from error

    def _resubscribe(self, down: list[bytes]) -> BackendError | None:
        """Refresh the slot map, then subscribe each of ``down`` on its slot's owner."""
        try:
            with self._errors("refresh the slot map of the Redis Cluster"):
                # Leave the startup nodes' connections alone: redis-py would otherwise
                # mark this very subscription's connections for a reconnect.
                self._cluster.nodes_manager.initialize(disconnect_startup_nodes_pools=False)
        except BackendError as exc:
            return exc
        error: BackendError | None = None
        for channel in down:
            try:
                with self._errors(f"subscribe to topic {self._topics[channel]!r} again"):
                    self._subscribe(channel)
            except (AuthenticationFailed, PermissionDenied):
                raise
            except BackendError as exc:
                error = exc
                name = self._node.get(channel)
                if name is not None:  # its connection failed: so did the node's others
                    # Expected until the cluster promotes a new owner: no warning per round.
                    self._drop_node(name, str(exc), level=logging.DEBUG)
        return error

    def _subscribe(self, channel: bytes) -> None:
        """Send ``SSUBSCRIBE channel`` to the master that owns its slot (map as cached)."""
        node = self._cluster.nodes_manager.get_node_from_slot(self._cluster.keyslot(channel))
        pubsub = self._pubsubs.get(node.name)
        if pubsub is None:
            pubsub = self._pubsubs[node.name] = self._cluster.get_redis_connection(node).pubsub()
            self._probes[node.name] = Probe(self._confirm_timeout, time.monotonic())
        # Noted before sending: a failure then drops it with the rest of the node's.
        self._node[channel] = node.name
        self._sent[channel] = time.monotonic()
        pubsub.ssubscribe(channel)

    # --- reading --------------------------------------------------------------------------

    def _read(self, name: str, timeout: float, *, others: bool = True) -> dict[str, Any] | None:
        """One bounded read from a node; a failure drops the node (and checks the others)."""
        try:
            with self._errors(f"receive from topic(s) {list(self._topics.values())!r}"):
                pubsub, probe = self._pubsubs[name], self._probes[name]
                message: dict[str, Any] | None = pubsub.get_message(timeout=timeout)
                if probe.observe(message is not None, lambda: pubsub.ping(PROBE_MESSAGE)):
                    raise redis.ConnectionError(probe.failure)
        except (AuthenticationFailed, PermissionDenied):
            raise
        except BackendError as exc:
            self._drop_node(name, str(exc))
            # A cut that hit this node often hit the others too (a network blip,
            # CLIENT KILL): find out now, so one round resubscribes them all and one
            # loss report covers them all.
            for other in list(self._pubsubs) if others else ():
                found = self._read(other, 0.0, others=False) if other in self._pubsubs else None
                if found is not None:
                    self._ready.append((other, found))
            return None
        return message

    def _sorted(self, name: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """Return what the subscriber should see of a node's message; handle the rest."""
        kind, channel = message["type"], message["channel"]
        if kind == "smessage":
            if channel in self._recovered:
                self._urgent = True
            return message
        if self._node.get(channel) != name:  # about a subscription given up on
            return None
        if kind == "ssubscribe":
            return message if self._confirmed(channel) else None
        if kind == "sunsubscribe":
            # We never unsubscribe while open: the node no longer serves the slot.
            logger.warning(
                "Cluster node %s dropped the subscription to topic %r (its slot moved); "
                "following the slot's new owner",
                name,
                self._topics.get(channel),
            )
            self._drop(channel)
            pubsub = self._pubsubs[name]
            pubsub.shard_channels.pop(channel, None)  # or redis-py renews it there
            if not pubsub.shard_channels:
                self._discard(name)
        return None

    def _confirmed(self, channel: bytes) -> bool:
        """Note a confirmation; True for a channel's first one (the caller counts those)."""
        self._sent.pop(channel, None)
        first = channel not in self._seen
        # Confirmed while already up: redis-py reconnected and resubscribed by itself.
        if not first:
            self._recovered.add(channel)
        self._seen.add(channel)
        self._up.add(channel)
        if len(self._up) == len(self._topics):  # whole again
            self.down_since = None
            if self.listening_since is None or not first:
                self.listening_since = time.monotonic()
        return first

    def _drop(self, channel: bytes) -> None:
        """``channel`` is no longer subscribed; the next round renews it."""
        self._node.pop(channel, None)
        self._sent.pop(channel, None)
        if channel in self._up:
            self._up.discard(channel)
            self._due = True
        # Dropped again before its loss was reported: one report, once it is back.
        self._recovered.discard(channel)
        self.listening_since = None

    def _drop_node(self, name: str, why: str, *, level: int = logging.WARNING) -> None:
        """Give up the node's subscription (dead or unreachable); its channels drop."""
        logger.log(
            level,
            "Subscription on cluster node %s dropped (%s); following its slots' owners",
            name,
            why,
        )
        self._discard(name)
        for channel in [c for c, node in self._node.items() if node == name]:
            self._drop(channel)

    def _discard(self, name: str) -> None:
        """Close a node's pubsub and forget it; a dead node's socket is just dropped."""
        pubsub = self._pubsubs.pop(name, None)
        self._probes.pop(name, None)
        if pubsub is None:
            return
        try:
            with self._errors(f"close a subscription on cluster node {name}"):
                pubsub.reset()
        except BackendError:
            logger.debug("The subscription's connection to %s was already gone", name)

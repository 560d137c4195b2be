"""Redis list publisher and subscriber (ProxyStore's ``RedisQueuePublisher``/``Subscriber``).

A topic is the list ``<prefix>:queue:{<topic>}``: :class:`RedisQueuePublisher` appends
each message (``RPUSH``) and :class:`RedisQueueSubscriber` takes from the head, so
messages wait in Redis until a subscriber takes them, and several subscribers of one
topic compete: each message goes to exactly one of them (so does an end-of-stream
event).

A pop is not destructive, unlike ProxyStore's ``BLPOP``: it moves the message into a
list of the subscriber's own (``BLMOVE``, see :mod:`framework.pubsub._taking`). A
connection that drops while a pop's reply is on its way therefore loses nothing: the
subscriber reconnects and reads the message back; it rides out an unreachable Redis
for ``max_outage`` seconds (30 by default), as durable subscribers do. A subscriber
closed with such a message still unread puts it back at the head of the topic's list. A
subscriber process that dies after a message was handed to it loses that message, as
any consumer of a queue does; use :mod:`framework.pubsub.streams` for acknowledged
delivery.

Waits are sliced into ``MAX_BLOCK_MS`` pops, so :meth:`RedisQueueSubscriber.close`
from another thread ends a blocked :meth:`~RedisQueueSubscriber.next_message` within
a second.

Competing subscribers each see only some messages, the end of the topic included, so
the producers of an object stream record themselves in the topic's producers hash
(``<list key>:end``): ``open:<run>`` from their first message, ``end:<run>`` with their
last, and a producer that sends heartbeats keeps an alive key of its own
(``<list key>:alive:<producer>``), as on durable topics. An idle subscriber ends the
topic once every recorded producer has ended and the list is empty, and reports a
producer whose alive key expired as gone (see :mod:`._list_ending`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any, Final

from crc32c import crc32c

from framework._raw import PinnedConnection
from framework._timeouts import checked_timeout
from framework.buffers import Segments
from framework.connection import MAX_BLOCK_MS, MAX_OUTAGE, RedisConnection
from framework.exceptions import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ClosedError,
    FrameworkError,
    MessageLossError,
    ReceiveTimeout,
)
from framework.pubsub._atomic import run_atomic
from framework.pubsub._list_ending import ENDS_TTL_MS, REGISTER, ListEnding
from framework.pubsub._outage import READ_GRACE, Outage, outage_note, unanswered_note
from framework.pubsub._records import LIST
from framework.pubsub._server_runs import ServerRun
from framework.pubsub._shim import RedisShim, connect, wait_limit
from framework.pubsub._taker import TAKEN_TTL_S, Taker
from framework.pubsub._watched import WatchedProducers
from framework.pubsub.protocols import UNSET, Unset

__all__ = ["RedisQueuePublisher", "RedisQueueSubscriber"]

logger = logging.getLogger(__name__)

#: Pause (s) between attempts while the connection is down.
RETRY_PAUSE_S: Final = 0.2
#: Seconds between checks, while the list is empty, of whether Redis restarted.
RESTART_CHECK_S: Final = 1.0
#: Seconds after a lost pop's reply during which the server may still fill its key: the
#: longest block, plus the server's own lag in timing out a blocked client.
SETTLE_S: Final = MAX_BLOCK_MS / 1000 + 1.0


class RedisQueuePublisher(WatchedProducers, RedisShim):
    """Append messages to Redis lists, one list per topic.

    Args:
        connection: A :class:`RedisConnection` (borrowed), or ProxyStore's hostname.
        port: ProxyStore's form only: the port.
        kwargs: ProxyStore's form only: further Redis settings (``db``, ``password``...).
    """

    accepts_segments: Final = True
    #: A producer's heartbeats keep a key alive (see :meth:`watch`).
    liveness: Final = True
    _kind = LIST

    def __init__(
        self,
        connection: RedisConnection | str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.connection, self._owns_connection = connect(connection, port, kwargs)
        self._run = uuid.uuid4().hex[:12]
        self._runs: dict[tuple[str, str], str] = {}  # (topic, producer) -> its run
        self._renew_at: dict[tuple[str, str], float] = {}  # when its messages renew next
        self._registered: set[tuple[str, str]] = set()
        self._alive_ms: dict[str, int] = {}  # producer -> its alive key's TTL
        self._record_keys: dict[str, bytes] = {}  # producer -> the key signing its records
        self._pinned = PinnedConnection(self.connection.once)

    def send_message(self, topic: str, message: bytes | Segments) -> None:
        """Append ``message`` to the topic's list, once (a push is never retried blindly).

        Raises:
            BackendError: If Redis failed; the message may or may not have been appended.
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
        """Run the store's ``commands``, then append ``message``, atomically.

        See :class:`~framework.pubsub.AtomicPublisher`. With ``source``, the producer is
        recorded as open on its first message and as ended with ``final``, so that
        competing subscribers, each seeing only some messages, know when the topic
        ended, and each push of the producer marks the producer's last message (its
        CRC-32C, in the same transaction). With ``retry`` (the producer resends a message
        whose push failed), a message whose first push did arrive, its reply lost, is
        not pushed again: a list has no sequence numbers to drop a duplicate by, and
        competing subscribers may have taken the first copy already. ``send_message``
        (no source) pushes once and never checks.

        Raises:
            BackendError: If Redis failed or refused a write (then nothing was appended
                unless the connection dropped, when the outcome is unknown).
        """
        keys = self.connection.keys
        ends = keys.queue_end(topic)
        tail: list[tuple[Any, ...]] = []
        alive_ms = self._alive_ms.get(source) if source else None
        register = bool(source) and (topic, source) not in self._registered
        renew = bool(source) and not final and self._renewal_due(topic, source, now=register)
        if register:  # forgets a finished run (see :data:`REGISTER`)
            self._start_run(topic, source)
            state = self._open_state(topic, source)
            prefix = keys.queue_alive(topic, source)[: -len(source)]
            tail.append(("EVAL", REGISTER, 1, ends, source, state, ENDS_TTL_MS, prefix))
        elif renew:
            tail += self._record_again(topic, source)
        if alive_ms and (final or renew):
            alive = keys.queue_alive(topic, source)
            run = self._run_of(topic, source)
            tail.append(("DEL", alive) if final else ("SET", alive, run, "PX", alive_ms))
        tail += _push(self.connection, topic, source, message, retry)
        if final and source:
            end = self._end_state(topic, source)
            tail += [("HSET", ends, source, end), ("PEXPIRE", ends, ENDS_TTL_MS)]
        try:
            with self.connection.mapped_errors(f"push to topic {topic!r}", command="RPUSH"):
                # Atomic with a source: the push and its mark land together or not at all.
                run_atomic(
                    self.connection, commands, tail, atomic=bool(source), pinned=self._pinned
                )
        except BackendError:
            self._registered.discard((topic, source))  # Redis may have restarted
            self._renew_next_time(topic, source)
            raise
        if final:  # the next message starts a new run of this producer on the topic
            self._registered.discard((topic, source))
        elif source:
            self._registered.add((topic, source))

    def _producer_keys(self, topic: str, source: str) -> tuple[str, str]:
        keys = self.connection.keys
        return keys.queue_end(topic), keys.queue_alive(topic, source)

    def _producers_ttl_ms(self) -> int:
        return ENDS_TTL_MS

    def _release(self) -> None:
        self._pinned.close()


#: Push ARGV[3] onto KEYS[1] unless KEYS[2][ARGV[1]] (the producer's last push) is ARGV[2].
_PUSH_ONCE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


def _push(
    conn: RedisConnection, topic: str, source: str, message: bytes | Segments, retry: bool
) -> list[tuple[Any, ...]]:
    """The commands that append ``message`` to the topic's list (see ``publish``)."""
    keys, value = conn.keys, conn.bulk(message)
    queue = keys.queue(topic)
    if not source:
        return [("RPUSH", queue, value)]
    pushed, mark = keys.queue_pushed(topic), f"{_crc(message):08x}"
    if retry:
        return [("EVAL", _PUSH_ONCE, 2, queue, pushed, source, mark, value, ENDS_TTL_MS)]
    return [
        ("RPUSH", queue, value),
        ("HSET", pushed, source, mark),
        ("PEXPIRE", pushed, ENDS_TTL_MS),
    ]


def _crc(message: bytes | Segments) -> int:
    if isinstance(message, Segments):
        crc = 0
        for part in message.parts:
            crc = crc32c(part, crc)
        return crc
    return crc32c(message)


class RedisQueueSubscriber(RedisShim):
    """Pop messages from the Redis list of one topic.

    Args:
        connection: A :class:`RedisConnection` (borrowed), or ProxyStore's hostname.
        port: ProxyStore's form only: the port (in the connection form, leave it out
            and pass ``topic`` by position or keyword).
        topic: The topic.
        timeout: Longest wait (s) of :meth:`next_message`; ``None`` waits forever.
        max_outage: Seconds Redis may stay unreachable before :meth:`next_message`
            raises (as on durable topics); it reconnects and goes on meanwhile.
        kwargs: ProxyStore's form only: further Redis settings.

    Attributes:
        topics: The topic, as a one-element tuple.
        complete: False: subscribers of a topic compete, so one sees only some messages.
    """

    complete: Final = False

    def __init__(
        self,
        connection: RedisConnection | str | None = None,
        port: int | str | None = None,
        topic: str | None = None,
        *,
        timeout: float | None = None,
        max_outage: float = MAX_OUTAGE,
        **kwargs: Any,
    ) -> None:
        if isinstance(connection, RedisConnection) and topic is None and isinstance(port, str):
            port, topic = None, port  # (connection, topic)
        if not isinstance(topic, str):
            raise TypeError("A queue subscriber needs one topic (a str).")
        self.connection, self._owns_connection = connect(connection, port, kwargs)
        self.topics: tuple[str, ...] = (topic,)
        self._timeout = checked_timeout(timeout, type(self).__name__)
        self._lock = threading.Lock()
        self._outage = Outage(max_outage)
        # A restart without an append-only file empties the list. redis-py reconnects on
        # its own, so the server's run is checked whenever a pop finds nothing.
        self._server = ServerRun(self.connection, self.connection.keys.queue(topic))
        self._next_check = 0.0
        # Pops move messages into keys of this subscriber's own (see module docstring).
        self._taker = Taker(self.connection, topic, SETTLE_S)
        self._ending = ListEnding(self.connection, topic)
        self._losses: deque[MessageLossError] = deque()  # gone producers, not raised yet
        #: The error of the last pop that Redis did not answer within its caller's wait.
        self._unanswered: BackendTimeout | None = None

    def __iter__(self) -> RedisQueueSubscriber:
        return self

    def __next__(self) -> bytes:
        return self.next_message()

    def next_message(self, *, timeout: float | Unset | None = UNSET) -> bytes:
        """Pop the next message, waiting for one.

        Args:
            timeout: Overrides the constructor's timeout for this call.

        Raises:
            StopIteration: If the subscriber is (or gets) closed, or once the topic ended:
                every producer recorded on it (object-stream producers record
                themselves) ended or is gone, and the list is empty.
            ReceiveTimeout: If nothing arrived in time (a ``TimeoutError``, as ProxyStore's).
            MessageLossError: If Redis restarted without an append-only file since the
                last pop (``possible``: the list may have held messages), or a producer
                that sent heartbeats stopped without ending the topic (``gone``).
            BackendError: If Redis failed, or stayed unreachable for ``max_outage``.
        """
        limit = wait_limit(timeout, self._timeout, type(self).__name__)
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            with self._lock:
                if self._closed:
                    raise StopIteration
                if self._losses:
                    raise self._losses.popleft()
                if self._ending.ended and not self._taker.holding():
                    raise StopIteration
                left = MAX_BLOCK_MS / 1000 if deadline is None else deadline - time.monotonic()
                wait = min(max(left, 0.0), MAX_BLOCK_MS / 1000)
                # A caller with a deadline does not wait out the socket timeout on a
                # frozen Redis: the reply is due when the BLMOVE's wait ends.
                message = self._pop(wait, None if deadline is None else wait + READ_GRACE)
            if message is not None:
                return message
            if deadline is not None and time.monotonic() >= deadline:
                raise ReceiveTimeout(
                    f"No message on topic {self.topics[0]!r} within {limit} s."
                    + outage_note(self._outage.since)
                    + unanswered_note(self._unanswered)
                )

    def verify_records(self, secret: bytes) -> None:
        """Act only on producer records signed with ``secret`` (a consumer's shared secret).

        The topic's producers hash tells competing subscribers when it ended and which
        producers stopped beating. From now on a record that is unsigned or does not
        verify (forged in Redis) is logged and counts as a producer that has not ended.
        """
        with self._lock:
            self._ending.verify_with(secret)

    def topic_ended(self) -> bool:
        """Whether the topic has ended for this subscriber; looks at Redis now.

        A :class:`~framework.stream.StreamConsumer` asks when the producers it has heard
        from have all ended: a producer whose messages all went to other subscribers
        may still be publishing. A producer found gone is raised by the next
        :meth:`next_message` first (the answer is False until then). With no producer
        recorded (messages sent by other means), there is nothing to check against:
        True.

        Raises:
            BackendError: If Redis failed.
        """
        with self._lock:
            if self._closed or self._losses or self._taker.holding():
                return False  # raise the losses first; hand over what it holds
            try:
                self._check_restart()  # what the list held may be lost: say so first
            except MessageLossError as loss:
                self._losses.append(loss)
                return False
            self._losses.extend(self._ending.check(now=True))
            ending = self._ending
            unrecorded = not ending.recorded and ending.trusted
            return (ending.ended or unrecorded) and not self._losses

    def poll_message(self) -> bytes | None:
        """Take the next message if one is waiting, else ``None``.

        Raises:
            StopIteration: If the subscriber is closed.
            BackendError: If Redis failed (a message the failed call took is handed
                over by the next call).
        """
        with self._lock:
            if self._closed:
                raise StopIteration
            message = self._taker.take(None)
            if message is not None:
                self._ending.took()
            return message

    def put_back(self, messages: list[bytes]) -> None:
        """Put ``messages`` back at the head of the topic's list, in their order.

        For messages this subscriber handed over but its consumer did not use (a
        :class:`~framework.stream.StreamConsumer` closing mid-message): the other
        subscribers of the topic take them next.

        Raises:
            ClosedError: If the subscriber is closed (its messages were put back then).
            BackendError: If Redis failed; the messages were not put back.
        """
        with self._lock:
            if self._closed:
                raise ClosedError(
                    f"The subscriber of topic {self.topics[0]!r} is closed; "
                    f"{len(messages)} message(s) could not be put back."
                )
            self._taker.put_back(messages)

    def _release(self) -> None:
        # Waits for a pop in progress (at most MAX_BLOCK_MS) before the connection closes.
        with self._lock:
            try:
                self._taker.close()
            except FrameworkError as exc:
                logger.warning(
                    "A message taken from topic %r but not handed over may be left in %s "
                    "(kept %d s): %s",
                    self.topics[0],
                    " or ".join(self._taker.unread()) or "no key",
                    TAKEN_TTL_S,
                    exc,
                )

    def _check_restart(self) -> None:
        """Nothing to pop: did Redis restart, and lose what the list held, meanwhile?"""
        if not self._server.observe(self._server.read()):
            return  # the same run, unreachable (the next pop says so), or it cannot tell
        self._ending.restarted()
        raise MessageLossError(
            f"Redis restarted (its run id changed) while reading list topic "
            f"{self.topics[0]!r}, and it keeps no append-only file: messages that were "
            "waiting in the list may be lost.",
            topic=self.topics[0],
            possible=True,
        )

    def _pop(self, wait: float, reply_within: float | None = None) -> bytes | None:
        """One bounded take; rides out an unreachable Redis for ``max_outage`` seconds.

        With ``reply_within`` (a caller's deadline), a pop Redis does not answer in time
        (frozen) finds nothing; its message, if it took one, is read back later.
        """
        self._unanswered = None
        try:
            message = self._taker.take(wait, reply_within)
        except BackendTimeout as exc:
            if reply_within is None:
                raise
            self._unanswered = exc
            return None
        except BackendUnavailable:
            if self._outage.failed():
                raise
            logger.warning(
                "Connection dropped while popping from topic %r; reconnecting (a message "
                "the pop took is read back)",
                self.topics[0],
            )
            time.sleep(RETRY_PAUSE_S)
            return None
        self._outage.ended()
        if message is not None:
            self._ending.took()
            return message
        if time.monotonic() >= self._next_check:
            self._next_check = time.monotonic() + RESTART_CHECK_S
            self._check_restart()  # first: a restart makes the producers hash unsure
            with contextlib.suppress(BackendUnavailable):  # the next pop reports it
                self._losses.extend(self._ending.check(now=True))
        return None

"""The object-protocol API of NVFlare's ``nvflare.apis.streaming``, with the guarantees here.

A sender's :class:`ObjectProducer` makes one :class:`Shareable` after another; the
engine sends each to every target, gathers one reply per target and hands them to
:meth:`ObjectProducer.process_replies`. Each target's :class:`ObjectConsumer` (made by
the :class:`ConsumerFactory` registered for the channel and topic) consumes the objects
of one session and replies. :class:`StreamableEngine` runs both sides; see
:class:`~framework.objects.RedisStreamableEngine`. This module does no I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from framework.objects.context import FLContext
from framework.objects.shareable import Shareable

__all__ = ["ConsumerFactory", "ObjectConsumer", "ObjectProducer", "StreamableEngine"]


class ObjectProducer(ABC):
    """Produces the objects of a stream on the sending side and judges the replies."""

    @abstractmethod
    def produce(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> tuple[Any, float]:
        """Return the next object to send and the seconds to wait for its replies.

        A long-running ``produce`` should check ``fl_ctx.get_run_abort_signal()`` and
        return early when it is triggered.

        Args:
            stream_ctx: The stream's context (the same dict on every call).
            fl_ctx: The run's context.

        Returns:
            ``(shareable, timeout)``; ``timeout`` may be an int or a float and must be
            positive. ``(None, _)`` ends the stream normally: every receiver finalizes
            with return code OK.
        """

    @abstractmethod
    def process_replies(
        self, replies: dict[str, Shareable], stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> Any:
        """Judge the replies to the last object.

        Args:
            replies: One reply per target, always: a target that failed, is unknown
                or did not reply in time has a reply whose return code says why
                (``COMMUNICATION_ERROR``, ``TIMEOUT``, ``EARLY_TERMINATION``...).
            stream_ctx: The stream's context.
            fl_ctx: The run's context.

        Returns:
            None to go on; anything else (also ``0``, ``{}`` or ``False``) ends the
            stream and becomes its result.
        """


class ObjectConsumer(ABC):
    """Consumes the objects of one stream session on the receiving side."""

    @abstractmethod
    def consume(
        self, shareable: Shareable, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> tuple[bool, Shareable]:
        """Consume one object; called once per sequence number, in order.

        Args:
            shareable: The received object.
            stream_ctx: The session's context (``StreamContextKey.CHANNEL``/``TOPIC`` set).
            fl_ctx: The receiver's context.

        Returns:
            ``(continue, reply)``: the reply goes to the sender; ``continue=False`` ends
            this target's session (the sender stops sending to it). Raising ends the
            session with an ``EXECUTION_EXCEPTION`` reply.
        """

    def finalize(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> None:  # noqa: B027
        """Called exactly once when the session ends, whatever ended it.

        ``stream_ctx[StreamContextKey.RC]`` says how: OK (normal end), TASK_ABORTED,
        TIMEOUT (the sender went silent past the idle timeout), EXECUTION_EXCEPTION...
        """


class ConsumerFactory(ABC):
    """Makes a consumer for each new session of a channel and topic."""

    @abstractmethod
    def get_consumer(self, stream_ctx: dict[str, Any], fl_ctx: FLContext) -> ObjectConsumer:
        """Return a new consumer for a session; called once, on its first object.

        Sessions can run at the same time, so return a fresh consumer each call.
        """

    def return_consumer(  # noqa: B027 - optional hook
        self, consumer: ObjectConsumer, stream_ctx: dict[str, Any], fl_ctx: FLContext
    ) -> None:
        """Take back a consumer after its session was finalized; called exactly once."""


class StreamableEngine(ABC):
    """An engine that streams objects to other sites and receives their streams."""

    @abstractmethod
    def stream_objects(
        self,
        channel: str,
        topic: str,
        stream_ctx: dict[str, Any],
        targets: list[str],
        producer: ObjectProducer,
        fl_ctx: FLContext,
        optional: bool = False,
        secure: bool = False,
    ) -> Any:
        """Send the producer's objects to ``targets`` until it ends the stream.

        Args:
            channel: App channel of the stream.
            topic: App topic of the stream.
            stream_ctx: Context sent to the receivers with the first object.
            targets: Receiving sites.
            producer: Makes the objects and judges the replies.
            fl_ctx: The run's context; its abort signal stops the stream.
            optional: Failures are logged at debug level only.
            secure: Encrypt the objects end to end.

        Returns:
            ``(rc, result)``: ``(OK, result)`` when ``process_replies`` returned a
            result, ``(OK, None)`` when ``produce`` ended the stream,
            ``(TASK_ABORTED, None)`` when the abort signal stopped it.
        """

    @abstractmethod
    def register_stream_processing(
        self,
        channel: str,
        topic: str,
        factory: ConsumerFactory,
        stream_done_cb: Any = None,
        **cb_kwargs: Any,
    ) -> None:
        """Handle new streams on ``channel``/``topic`` with consumers from ``factory``.

        ``stream_done_cb(stream_ctx, fl_ctx, **cb_kwargs)`` runs once per session,
        after ``finalize`` and before ``return_consumer``.
        """

    @abstractmethod
    def shutdown_streamer(self) -> None:
        """Stop streaming: end open sessions and join the engine's threads."""

    def stream_done_cb_signature(  # noqa: B027 - documents the callback's signature
        self, stream_ctx: dict[str, Any], fl_ctx: FLContext, **kwargs: Any
    ) -> None:
        """The signature of ``stream_done_cb``.

        Args:
            stream_ctx: The session's context; ``StreamContextKey.RC`` holds its end state.
            fl_ctx: The receiver's context.
            **kwargs: The ``cb_kwargs`` given to :meth:`register_stream_processing`.
        """

"""``Shareable``, ``ReturnCode`` and ``make_reply``: NVFlare's message object, as a plain dict.

A :class:`Shareable` is a ``dict`` whose headers live under the reserved key
``"__headers__"`` and whose return code is the header ``"__rc__"``, exactly where NVFlare
keeps them, so code that reads ``shareable["__headers__"]`` keeps working. This module
does no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReservedHeaderKey", "ReturnCode", "Shareable", "make_reply"]


class ReturnCode:
    """Return codes carried in a reply's ``__rc__`` header (NVFlare's names and values).

    The engine itself sets the first group; the others are NVFlare's, for consumers and
    producers ported from it.
    """

    OK = "OK"
    ERROR = "ERROR"
    TIMEOUT = "TIMEOUT"
    COMMUNICATION_ERROR = "COMMUNICATION_ERROR"
    EXECUTION_EXCEPTION = "EXECUTION_EXCEPTION"
    TASK_ABORTED = "TASK_ABORTED"
    BAD_REQUEST_DATA = "BAD_REQUEST_DATA"
    TOPIC_UNKNOWN = "TOPIC_UNKNOWN"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    EARLY_TERMINATION = "EARLY_TERMINATION"
    EMPTY_RESULT = "EMPTY_RESULT"

    BAD_PEER_CONTEXT = "BAD_PEER_CONTEXT"
    BAD_TASK_DATA = "BAD_TASK_DATA"
    EXECUTION_RESULT_ERROR = "EXECUTION_RESULT_ERROR"
    HANDLER_EXCEPTION = "HANDLER_EXCEPTION"
    MISSING_PEER_CONTEXT = "MISSING_PEER_CONTEXT"
    MODEL_UNRECOGNIZED = "MODEL_UNRECOGNIZED"
    RUN_MISMATCH = "RUN_MISMATCH"
    SERVER_NOT_READY = "SERVER_NOT_READY"
    TASK_DATA_FILTER_ERROR = "TASK_DATA_FILTER_ERROR"
    TASK_RESULT_FILTER_ERROR = "TASK_RESULT_FILTER_ERROR"
    TASK_UNKNOWN = "TASK_UNKNOWN"
    TASK_UNSUPPORTED = "TASK_UNSUPPORTED"
    UNSAFE_JOB = "UNSAFE_JOB"
    VALIDATE_TYPE_UNKNOWN = "VALIDATE_TYPE_UNKNOWN"


class ReservedHeaderKey:
    """Header keys the framework reads or writes."""

    HEADERS = "__headers__"
    RC = "__rc__"
    #: Human-readable reason of an error reply.
    ERROR = "__error__"
    #: True on a reply after which the target takes no more objects of the stream.
    SESSION_ENDED = "__session_ended__"


class Shareable(dict):  # type: ignore[type-arg]  # NVFlare's Shareable is an untyped dict
    """The object exchanged between sites: any keys and values, plus headers.

    Args:
        data: Initial content (copied, shallowly), headers and return code included: the
            copy of a reply is a reply with the same return code.
    """

    def __init__(self, data: dict[Any, Any] | None = None) -> None:
        super().__init__()
        if data:
            self.update(data)
        headers = self.get(ReservedHeaderKey.HEADERS)
        # Its own headers dict: setting a header on the copy leaves the original alone.
        self[ReservedHeaderKey.HEADERS] = dict(headers) if isinstance(headers, dict) else {}

    def set_header(self, key: str, value: Any) -> None:
        """Set header ``key`` to ``value``."""
        headers = self.get(ReservedHeaderKey.HEADERS)
        if not isinstance(headers, dict):
            headers = self[ReservedHeaderKey.HEADERS] = {}
        headers[key] = value

    def get_header(self, key: str, default: Any = None) -> Any:
        """Return header ``key``, or ``default`` when it is absent.

        Raises:
            ValueError: If the headers entry was replaced by something that is not a dict.
        """
        headers = self.get(ReservedHeaderKey.HEADERS)
        if not headers:
            return default
        if not isinstance(headers, dict):
            raise ValueError(f"Shareable headers must be a dict, not {type(headers).__name__}.")
        return headers.get(key, default)

    def get_return_code(self, default: str = ReturnCode.OK) -> Any:
        """Return the ``__rc__`` header, or ``default`` (OK) when it is absent."""
        return self.get_header(ReservedHeaderKey.RC, default)

    def set_return_code(self, rc: str) -> None:
        """Set the ``__rc__`` header."""
        self.set_header(ReservedHeaderKey.RC, rc)


def make_reply(rc: str, headers: dict[str, Any] | None = None) -> Shareable:
    """Return a new :class:`Shareable` carrying return code ``rc`` and ``headers``."""
    reply = Shareable()
    reply.set_return_code(rc)
    for key, value in (headers or {}).items():
        reply.set_header(key, value)
    return reply


def error_reply(rc: str, reason: str, **headers: Any) -> Shareable:
    """A reply with return code ``rc`` and ``reason`` in the ``__error__`` header."""
    return make_reply(rc, {ReservedHeaderKey.ERROR: reason, **headers})

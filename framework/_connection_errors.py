"""Redis exceptions turned into :mod:`framework.exceptions` (the error boundary).

:func:`mapped_errors` is the one place redis-py's exceptions are caught and re-raised as
the framework's, with a message naming the operation and the server; it is re-exported
by :mod:`framework.connection`, whose :class:`~framework.connection.RedisConnection`
adds its redacted URL. :func:`raise_mapped` does the same without a context manager,
for loops where a ``with`` block per read shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import redis.exceptions as rex

from framework.exceptions import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigurationError,
    PermissionDenied,
)

__all__ = ["mapped_errors", "raise_mapped", "redis_said"]


@contextmanager
def mapped_errors(
    what: str, *, url: str | None = None, command: str | None = None, auth_hint: str | None = None
) -> Iterator[None]:
    """Turn redis-py exceptions raised in the block into framework exceptions.

    Args:
        what: The operation, as a verb phrase naming its key or topic, e.g.
            ``"read object 'fw:obj:{1}'"``; it becomes part of the message.
        url: The redacted URL of the server, for the message.
        command: The Redis command, stored on the exception.
        auth_hint: How to give credentials, when Redis asks for a password (default: put
            one in the URL).

    Yields:
        Nothing; the block runs inside the mapping.

    Raises:
        BackendTimeout: Redis did not answer within the socket timeout.
        AuthenticationFailed: Redis refused the credentials, or needs some and got none.
        PermissionDenied: The ACL user may not run ``command`` or touch its key or channel.
        BackendUnavailable: Redis cannot be reached, the connection dropped, the pool is
            exhausted or the cluster is down.
        BackendError: Redis or the client reported any other error.
    """
    try:
        yield
    except (rex.RedisError, rex.RedisClusterException) as exc:
        raise_mapped(exc, what, url, command, auth_hint)


def raise_mapped(
    exc: Exception, what: str, url: str | None, command: str | None, auth_hint: str | None = None
) -> NoReturn:
    """Raise the framework exception for ``exc`` (see :func:`mapped_errors`)."""
    # Formatted only on failure: the block around every hot-path read is entered per read.
    head = f"Could not {what}: Redis at {url}" if url else f"Could not {what}: Redis"
    if isinstance(exc, rex.TimeoutError):
        # A TLS handshake with a server that speaks plain TCP waits until it times out.
        tls = url is not None and url.startswith("rediss") and "connecting" in str(exc).lower()
        hint = " Is TLS enabled on that port (rediss://)?" if tls else ""
        raise BackendTimeout(
            f"{head} did not answer in time ({exc}).{hint}", command=command
        ) from exc
    # Before ConnectionError: redis-py's AuthenticationError is one.
    if isinstance(exc, rex.AuthenticationError | rex.AuthenticationWrongNumberOfArgsError):
        raise AuthenticationFailed(_auth_message(head, exc, auth_hint), command=command) from exc
    if isinstance(exc, rex.NoPermissionError):
        denied = _denied(str(exc), command)
        raise PermissionDenied(
            f"{head} denied {denied} to this ACL user ({exc}); grant it in the user's ACL rules.",
            command=command,
        ) from exc
    if isinstance(exc, rex.ConnectionError | rex.ClusterDownError | rex.SlotNotCoveredError):
        raise BackendUnavailable(f"{head} is unreachable ({exc}).", command=command) from exc
    if isinstance(exc, rex.InvalidResponse):  # bytes that are not RESP
        raise BackendUnavailable(
            f"{head} answered with something that is not the Redis protocol ({exc}): is "
            "the URL's host and port a Redis server, and TLS (rediss://) used exactly "
            "when the server expects it?",
            command=command,
        ) from exc
    if isinstance(exc, rex.MovedError | rex.AskError | rex.ClusterCrossSlotError) and not (
        url or ""
    ).startswith(("redis+cluster", "rediss+cluster")):
        # A node of a cluster reached by a standalone URL: some keys are elsewhere, so
        # this failed or not depending on the key's slot.
        raise ConfigurationError(
            f"{head} is a node of a Redis Cluster ({type(exc).__name__}: {exc}): connect "
            "with a redis+cluster:// (or rediss+cluster://) URL, or cluster=True.",
        ) from exc
    if _SCRIPT_DENIED in str(exc):  # a Lua script's command refused by the ACL
        raise PermissionDenied(
            f"{head} denied a command of a Lua script to this ACL user ({exc}); grant "
            "the script's commands in the user's ACL rules.",
            command=command,
        ) from exc
    raise BackendError(f"{head} reported {redis_said(exc)}.", command=command) from exc


# What Redis says when an ACL refuses a command that a script runs (not a NOPERM error).
_SCRIPT_DENIED = "user executing the script can't run this command"
# NOPERM texts name the command ("... to run the 'xread' command") but not a key or channel.
_DENIED_COMMAND = re.compile(r"run the '([^']+)' command")


def redis_said(exc: Exception) -> str:
    """``Type: message`` of an error Redis answered, without its closing period.

    Redis ends some of its messages with a period, and the framework's own messages
    add one after it.
    """
    return f"{type(exc).__name__}: {str(exc).rstrip('.')}"


def _denied(text: str, command: str | None) -> str:
    """What a NOPERM error refused: a named command, or a key or channel of ``command``."""
    named = _DENIED_COMMAND.search(text)
    if named:
        return named.group(1).upper()
    for thing in ("key", "channel"):
        if thing in text:
            return f"access to a {thing}" + (f" (command {command})" if command else "")
    return command or "the command"


def _auth_message(head: str, exc: Exception, hint: str | None = None) -> str:
    """Tell a missing password from a refused one: they need different fixes."""
    # NOAUTH: "Authentication required", or under RESP3 "HELLO must be called with the
    # client already authenticated"; a refused password says "invalid ..." instead.
    text = str(exc).lower()
    if "required" in text or "already authenticated" in text:
        fix = hint or (
            "put user:password in the URL (or pass password=... to "
            "RedisConnection.from_url, RedisSettings or RedisConnector)."
        )
        return f"{head} requires a password and none was given: {fix}"
    return f"{head} refused the credentials ({exc})."

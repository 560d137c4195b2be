"""The keys of a stream read, found without asking the cluster.

redis-py's cluster client routes each command by the slot of its keys. For commands
whose keys move (``XREAD``, ``XREADGROUP``: the keys follow ``STREAMS``) it asks a
node with ``COMMAND GETKEYS`` before every call: an extra round trip per read (on a
local cluster an ``XREAD`` took 383 us against 137 us for a ``GET``). Every reader of
this framework (byte-stream chunks and controls, cell inboxes, object mailboxes,
durable topics) makes such reads on its hot path. :class:`StreamKeysParser` finds
their keys from the arguments and leaves every other command to redis-py's parser.

This module does no I/O and imports no Redis code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["StreamKeysParser", "stream_read_keys"]

#: Options of XREAD/XREADGROUP before ``STREAMS``, and how many values each takes.
_OPTIONS = {"COUNT": 1, "BLOCK": 1, "NOACK": 0}


def stream_read_keys(args: Sequence[Any]) -> list[Any] | None:
    """The stream keys of an ``XREAD`` or ``XREADGROUP`` command, or None.

    None for any other command, and for a form this function does not know (an
    unknown option, an odd number of arguments after ``STREAMS``): the caller then
    asks the server as before.

    Args:
        args: The command and its arguments, e.g. ``("XREAD", "COUNT", 8, "STREAMS",
            "k", "0-0")``.
    """
    name = _word(args[0]) if args else ""
    if name == "XREAD":
        at = 1
    elif name == "XREADGROUP" and len(args) > 3 and _word(args[1]) == "GROUP":
        at = 4  # GROUP <group> <consumer>: names that may be any word, even STREAMS
    else:
        return None
    while at < len(args):
        word = _word(args[at])
        if word == "STREAMS":
            rest = list(args[at + 1 :])
            if not rest or len(rest) % 2:
                return None
            return rest[: len(rest) // 2]
        if word not in _OPTIONS:
            return None
        at += 1 + _OPTIONS[word]
    return None


def _word(arg: Any) -> str:
    if isinstance(arg, bytes):
        return arg.decode("latin-1").upper()
    return arg.upper() if isinstance(arg, str) else ""


class StreamKeysParser:
    """A cluster client's command parser that knows the keys of stream reads itself.

    Wraps the client's own parser (redis-py's ``CommandsParser``) and hands it every
    command :func:`stream_read_keys` does not know; its other attributes are the
    wrapped parser's.

    Args:
        parser: The parser the cluster client built.
    """

    def __init__(self, parser: Any) -> None:
        self._parser = parser

    def get_keys(self, redis_conn: Any, *args: Any) -> Any:
        """The keys of ``args``: found here for stream reads, else by the wrapped parser."""
        keys = stream_read_keys(args)
        return self._parser.get_keys(redis_conn, *args) if keys is None else keys

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)

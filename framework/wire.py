"""How commands reach the socket: a RESP packer that never copies large values.

redis-py's hiredis packer copies every large argument twice; a 64 MB SET runs several
times faster without it. The framework's connections (:class:`ZeroCopyConnection` and
its TLS and Unix-socket siblings) keep redis-py's hiredis reply parser but pack
commands with :class:`ZeroCopySerializer`, which sends large ``bytes``, ``memoryview``
and :class:`~framework.buffers.Segments` arguments without copying them;
:func:`pack_small` packs the short commands of per-message round trips with hiredis.
TCP connections to a loopback address use Reno congestion control (:func:`unpaced`).
This module does no I/O of its own.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Any, Final

import hiredis
from redis import connection as rconn

from framework._gather import GatherSendMixin
from framework.buffers import Segments, byte_view

__all__ = [
    "LOOPBACK_CONGESTION",
    "ZeroCopyConnection",
    "ZeroCopySSLConnection",
    "ZeroCopySerializer",
    "ZeroCopyUnixDomainSocketConnection",
    "is_loopback",
    "pack_small",
    "packs_without_copies",
    "unpaced",
]

logger = logging.getLogger(__name__)

#: Congestion control of TCP connections to a loopback address (see :func:`unpaced`).
LOOPBACK_CONGESTION: Final = b"reno"


class ZeroCopySerializer(rconn.PythonRespSerializer):
    r"""RESP command packer that never copies a large argument.

    Small pieces are joined into one buffer (one ``sendall`` instead of many); arguments
    larger than the connection's buffer cutoff (6000 B) are output items of their own, so
    the socket reads them in place. A :class:`~framework.buffers.Segments` argument becomes
    one bulk string: ``$<nbytes>\r\n``, then each part, then ``\r\n``, never joined.
    Memoryviews of any format are sent by their byte length (redis-py would send the item
    count).
    """

    def __init__(self, buffer_cutoff: int, encode: Any) -> None:
        super().__init__(buffer_cutoff, encode)
        encoding = getattr(getattr(encode, "__self__", None), "encoding", "utf-8")
        #: hiredis encodes text as UTF-8: its fast path only serves clients that do too.
        self.text_is_utf8 = encoding.lower().replace("-", "").replace("_", "") == "utf8"

    def pack(self, *args: Any) -> list[Any]:
        """Pack one command into a list of buffers for ``sendall``.

        Args:
            *args: Command name and arguments (str, bytes-like, int, float or Segments).

        Returns:
            The wire buffers, in order.
        """
        if isinstance(args[0], str):
            # "CONFIG GET"-style names hold several protocol words; redis-py splits them too.
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        cutoff = self._buffer_cutoff
        if self.text_is_utf8 and _all_small_plain(args, cutoff):
            # Most commands on the hot paths are a few short words: hiredis packs them in
            # about a tenth of the time the loop below takes (1 us against 9 us).
            return [hiredis.pack_command(args)]
        items: list[Any] = [b"*%d\r\n" % len(args)]
        large = False  # most commands are small: then one join makes the whole command
        for arg in args:
            if isinstance(arg, Segments):
                items.append(b"$%d\r\n" % arg.nbytes)
                items.extend(arg.parts)
                large = True
            else:
                value = self.encode(arg)
                if isinstance(value, memoryview):
                    value = byte_view(value)
                items += (b"$%d\r\n" % len(value), value)
                large = large or len(value) > cutoff
            items.append(b"\r\n")
        return _coalesce(items, cutoff) if large else [b"".join(items)]


def pack_small(connection: Any, commands: Sequence[tuple[Any, ...]]) -> bytes | None:
    """``commands`` packed by hiredis in one piece, if each is a few short plain arguments.

    The per-message round trips of readers (a chunk read with its ack, a mailbox read
    with its upkeep) skip redis-py's ``pack_commands`` this way (~10 us each). None when
    an argument is large or not ``bytes``/``str``/``int``, or when ``connection`` does
    not use :class:`ZeroCopySerializer` with UTF-8 text: the caller then lets the
    connection pack (large values go without a copy).
    """
    packer: Any = getattr(connection, "_command_packer", None)
    if not getattr(packer, "text_is_utf8", False):
        return None
    cutoff = packer._buffer_cutoff
    if not all(_all_small_plain(command, cutoff) for command in commands):
        return None
    return b"".join([hiredis.pack_command(command) for command in commands])


def _all_small_plain(args: tuple[Any, ...], cutoff: int) -> bool:
    """Whether every argument is ``bytes``, ``str`` or ``int`` and none is over ``cutoff``.

    Those are the types hiredis encodes exactly as redis-py's encoder does (UTF-8 text,
    decimal integers); floats, bools, memoryviews and Segments take the general path.
    """
    for arg in args:
        kind = type(arg)
        if kind is bytes or kind is str:
            if len(arg) > cutoff:
                return False
        elif kind is not int:
            return False
    return True


def _coalesce(items: list[Any], cutoff: int) -> list[Any]:
    """Join runs of small items; keep items above ``cutoff`` bytes as they are."""
    output: list[Any] = []
    run: list[Any] = []
    for item in items:
        if len(item) > cutoff:
            if run:
                output.append(b"".join(run))
                run = []
            output.append(item)
        elif item:
            run.append(item)
    if run:
        output.append(b"".join(run))
    return output


def _zero_copy_packer(self: Any, packer: Any) -> Any:
    # Replaces redis-py's choice of packer (hiredis when installed); the parser is untouched.
    return packer or ZeroCopySerializer(self._buffer_cutoff, self.encoder.encode)


def packs_without_copies(connection_class: Any) -> bool:
    """Whether ``connection_class`` packs commands with :class:`ZeroCopySerializer`."""
    return getattr(connection_class, "_construct_command_packer", None) is _zero_copy_packer


def is_loopback(sock: socket.socket) -> bool:
    """True if ``sock`` is a TCP socket connected to a loopback address."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        return ipaddress.ip_address(sock.getpeername()[0]).is_loopback
    except (OSError, ValueError):
        return False


def unpaced(sock: socket.socket) -> None:
    """Give a TCP socket connected to a loopback address Reno congestion control.

    Hosts that default to BBR pace every socket's sends with kernel timers. On loopback
    there is no network to pace for: a pipelined 16 MB write to a local Redis ran at
    3.3-4.7 GB/s under BBR and 9.2-9.8 GB/s under Reno, and each paced send costs a timer
    interrupt (more so in a VM). Reno is the one algorithm Linux lets every process pick.
    Connections to other hosts keep the host's algorithm; where the option is missing or
    refused, nothing changes.
    """
    if not hasattr(socket, "TCP_CONGESTION") or not is_loopback(sock):
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, LOOPBACK_CONGESTION)
    except OSError:
        logger.debug("Could not set the congestion control of a loopback socket.", exc_info=True)


class ZeroCopyConnection(GatherSendMixin, rconn.Connection):
    """TCP connection: hiredis parser, :class:`ZeroCopySerializer`, one sendmsg per command.

    Connections to a loopback address are :func:`unpaced`; :attr:`loopback` says whether
    the current socket is one.
    """

    _construct_command_packer = _zero_copy_packer
    #: True while connected to a loopback address (the peer is on this host).
    loopback = False

    def _connect(self) -> socket.socket:
        sock: socket.socket = super()._connect()  # type: ignore[no-untyped-call]
        self.loopback = is_loopback(sock)
        unpaced(sock)
        return sock


class ZeroCopySSLConnection(rconn.SSLConnection):
    """TLS connection with the hiredis reply parser and the :class:`ZeroCopySerializer`."""

    _construct_command_packer = _zero_copy_packer


class ZeroCopyUnixDomainSocketConnection(GatherSendMixin, rconn.UnixDomainSocketConnection):
    """Unix-socket connection with the hiredis reply parser and the zero-copy packer."""

    _construct_command_packer = _zero_copy_packer

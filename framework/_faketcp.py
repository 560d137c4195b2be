"""fakeredis's TCP server, made safe for large replies.

fakeredis 2.40's ``TcpFakeServer`` puts each client socket in non-blocking mode
(so its handler can poll for commands) and then writes replies with ``sendall``.
A reply larger than the free space in the socket's send buffer (a few MB of
stream entries, say, while the client is still sending) then fails with
``BlockingIOError`` and the server drops the connection. :func:`make_server`
returns a server whose handlers wait for the socket to drain instead.
"""

from __future__ import annotations

import io
import select
import socket
from typing import Any

from fakeredis import TcpFakeServer
from fakeredis._clients._tcp_server import TCPFakeRequestHandler

__all__ = ["make_server"]

#: Seconds one wait for a writable socket may take before the reply is abandoned.
WRITE_TIMEOUT = 30.0


class _DrainingWriter(io.BufferedIOBase):
    """File-like writer that completes every write on a non-blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def write(self, data: Any, /) -> int:
        view = memoryview(data)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except BlockingIOError:
                _, writable, _ = select.select([], [self._sock], [], WRITE_TIMEOUT)
                if not writable:
                    raise TimeoutError(
                        "The fakeredis client stopped reading its replies."
                    ) from None
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered: every write went to the socket."""


def make_server(address: tuple[str, int]) -> Any:
    """A ``fakeredis.TcpFakeServer`` on ``address`` whose replies survive slow readers."""
    server = TcpFakeServer(address)
    server.RequestHandlerClass = _Handler
    return server


class _Handler(TCPFakeRequestHandler):
    def setup(self) -> None:
        super().setup()
        # The client connection object holds this same Writer, so pub/sub pushes drain too.
        self.writer.writer = _DrainingWriter(self.connection)

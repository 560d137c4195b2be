"""A TCP proxy whose connections can be cut silently, as a partition or a NAT would.

:meth:`Blackhole.swallow` makes every connection open so far drop whatever either side
sends, without closing anything: neither side learns of it. Connections made later are
forwarded as usual.
"""

from __future__ import annotations

import selectors
import socket
import threading

HOST = "127.0.0.1"


class Blackhole:
    """Forwards ``127.0.0.1:port`` to ``target_port``; closed by :meth:`close`."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._swallowed: set[socket.socket] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-blackhole", daemon=True)
        self._thread.start()

    def swallow(self) -> None:
        """From now on, drop what the connections open so far carry, closing none."""
        with self._lock:
            self._swallowed.update(self._peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in [self._listener, *self._peer]:
            sock.close()
        self._selector.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._forward(sock)

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection((HOST, self._target))
        with self._lock:
            self._peer[client], self._peer[server] = server, client
        for sock in (client, server):
            self._selector.register(sock, selectors.EVENT_READ)

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            peer = self._peer.get(sock)
            swallowed = sock in self._swallowed
        if swallowed or peer is None:
            if not data:  # the sender closed its end: nothing more to read there
                self._selector.unregister(sock)
            return  # read and dropped: the sender sees its data taken, as on a lossy path
        if not data:
            for end in (sock, peer):
                self._selector.unregister(end)
                end.close()
                with self._lock:
                    self._peer.pop(end, None)
            return
        peer.sendall(data)

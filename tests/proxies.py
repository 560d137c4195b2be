"""A TCP proxy to Redis that loses the reply to a marked command, as a dropped link would.

The command still reaches Redis and runs there; the client sees its connection close
instead of the reply. That is the one fault after which a client cannot know whether
a write happened, and the one a retry or a destructive pop turns into duplication or
loss.
"""

from __future__ import annotations

import selectors
import socket
import threading


class ReplyDropper:
    """Forwards everything, but drops the connection instead of a marked command's reply.

    Args:
        upstream: Redis's (host, port).
        markers: A connection whose client sends bytes containing any of these has the
            next reply dropped, and is closed.
        times: How many replies to drop in all; ``None`` for every one.
    """

    def __init__(
        self, upstream: tuple[str, int], *markers: bytes, times: int | None = None
    ) -> None:
        self.markers = markers
        self.upstream = upstream
        self.left = times
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.threads.append(threading.Thread(target=self._accept, name="test-proxy"))
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._pump, args=(client,), name="test-proxy-pump")
            self.threads.append(thread)
            thread.start()

    def _marked(self, data: bytes) -> bool:
        with self._lock:
            if self.left == 0 or not any(marker in data for marker in self.markers):
                return False
            if self.left is not None:
                self.left -= 1
            return True

    def _pump(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        drop = False
        with client, server, selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ, server)
            sel.register(server, selectors.EVENT_READ, client)
            while not self.stopping.is_set():
                for key, _ in sel.select(0.05):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if drop and key.fileobj is server:
                        with self._lock:
                            self.dropped += 1
                    if not data or (drop and key.fileobj is server):
                        return  # the client sees the connection drop instead of a reply
                    drop = drop or (key.fileobj is client and self._marked(data))
                    key.data.sendall(data)

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(5)
        self.listener.close()

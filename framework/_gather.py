"""Send a packed command with one ``sendmsg`` call instead of one ``sendall`` per part.

The zero-copy packer leaves a command with a large value as several buffers
(prefix, value parts, suffix) so that nothing is joined; redis-py then calls
``sendall`` once per buffer, a system call each. Scatter-gather I/O hands them
all to the kernel at once. TLS sockets cannot ``sendmsg``; they keep redis-py's loop.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["GatherSendMixin", "send_gathered"]

#: Most buffers one ``sendmsg`` call takes (Linux's IOV_MAX is 1024).
MAX_IOV = 512


def send_gathered(sock: socket.socket, items: Sequence[Any]) -> None:
    """Write every buffer of ``items`` to ``sock``, in order, with as few calls as possible."""
    views = [memoryview(item).cast("B") for item in items if len(item)]
    while views:
        sent = sock.sendmsg(views[:MAX_IOV])
        while sent:  # drop what went out; keep the unsent tail of a partly sent buffer
            if sent >= len(views[0]):
                sent -= len(views.pop(0))
            else:
                views[0] = views[0][sent:]
                sent = 0


class GatherSendMixin:
    """Overrides redis-py's ``send_packed_command`` for plain (non-TLS) sockets."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Send an already packed command, scatter-gathering its buffers.

        Raises:
            redis.exceptions.TimeoutError: If the socket timed out (the connection is dropped).
            redis.exceptions.ConnectionError: If writing failed (the connection is dropped).
        """
        if isinstance(command, str) or len(command) < 2:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        if not self._sock:  # type: ignore[attr-defined]
            self.connect_check_health(check_health=False)  # type: ignore[attr-defined]
        if check_health:
            self.check_health()  # type: ignore[attr-defined]
        try:
            send_gathered(self._sock, command)  # type: ignore[attr-defined]
        except TimeoutError:
            self.disconnect()  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            self.disconnect()  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error while writing to socket: {exc}.") from exc
        except BaseException:
            # A half-sent command leaves the stream unusable: never reuse the connection.
            self.disconnect()  # type: ignore[attr-defined]
            raise

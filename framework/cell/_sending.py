"""How a :class:`~framework.cell.StreamCell` starts a transfer: targets, announcement, sender.

The cell keeps its public methods in :mod:`framework.cell.cell`; this mixin is what
they share once a payload is accepted. It checks every target before anything is
written, builds the announcement (refusing headers that JSON cannot carry), announces
it to each target's inbox and starts the transfer's :class:`~framework.cell.sender.TxTask`,
also from the point where a resumed transfer stops.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic_core import PydanticSerializationError

from framework.cell.auth import ControlAuth
from framework.cell.config import CellConfig
from framework.cell.crypto import ChunkCipher
from framework.cell.frames import Announce
from framework.cell.inbox import announce
from framework.cell.sender import TxTask
from framework.cell.transport import TransferIO
from framework.cell.types import Message, Stream, StreamFuture
from framework.cell.window import Position
from framework.connection import RedisConnection
from framework.exceptions import ConfigurationError, EncryptionError, StreamError

__all__ = ["Sending", "Target"]

Target = str | Sequence[str]


class Sending:
    """Starting the transfers of a :class:`~framework.cell.StreamCell`.

    The cell's ``__init__`` sets every attribute declared here.
    """

    conn: RedisConnection
    name: str
    config: CellConfig
    _key: bytes | None
    _tx: dict[int, TxTask]
    _lock: threading.Lock

    if TYPE_CHECKING:  # provided by StreamCell

        def _check_open(self) -> None: ...

        def _security(
            self, secure: bool, sid: int
        ) -> tuple[ChunkCipher | None, ControlAuth | None]: ...

    def _send(
        self,
        mode: Literal["stream", "blob"],
        channel: str,
        topic: str,
        target: Target,
        message: Message,
        source: Stream,
        secure: bool,
        optional: bool,
    ) -> StreamFuture:
        self._check_open()
        for what, name in (("channel", channel), ("topic", topic)):
            if not isinstance(name, str) or not name:
                raise ConfigurationError(
                    f"send_{mode}: {what} must be a non-empty string, not {name!r:.80}."
                )
        targets = self._targets(target, mode)
        if self.config.require_secure and not secure:
            raise EncryptionError(
                f"Cell {self.name!r} sends only encrypted transfers (require_secure=True): "
                f"pass secure=True to send_{mode}."
            )
        fields = {"channel": channel, "topic": topic, "mode": mode, "secure": secure}
        ann = self._announcement(fields, targets, message, source, optional)
        cipher, auth = self._security(secure, ann.sid)
        io = TransferIO(self.conn, ann.sid, self.config.ttl, auth)
        # Signed whenever this cell has a key: receivers and a resumed sender check it.
        mac = None
        if self._key is not None:
            mac = ControlAuth(self._key, ann.sid).sign_announce(ann.model_dump_json().encode())
        io.create(ann, mac)
        for name in targets:
            announce(self.conn, name, ann, self.config.inbox_ttl, mac)
        return self._start_tx(io, ann, source, cipher)

    def _targets(self, target: Any, mode: str) -> list[str]:
        """The distinct target names, each checked before anything is written.

        A name refused after others were announced would leave them a transfer whose
        sender never starts (they would wait out their idle timeout).
        """
        if isinstance(target, str):
            targets = [target]
        elif isinstance(target, Iterable) and not isinstance(target, (bytes, bytearray)):
            targets = list(dict.fromkeys(target))
        else:
            raise ConfigurationError(
                f"send_{mode}: target must be a cell name or a list of them, "
                f"not {type(target).__name__}."
            )
        if not targets:
            raise ConfigurationError(f"send_{mode} needs at least one target.")
        for name in targets:
            self.conn.keys.inbox(name)  # raises ConfigurationError for an unusable name
        return targets

    def _announcement(
        self,
        fields: dict[str, Any],
        targets: list[str],
        message: Message,
        source: Stream,
        optional: bool,
    ) -> Announce:
        headers = {**(source.get_headers() or {}), **message.headers}
        try:
            # The stdlib's rules, strictly: pydantic alone would turn bytes into str, a
            # set into a list, NaN into null, and receivers would get other values.
            json.dumps(headers, allow_nan=False)
            ann = Announce(
                sid=secrets.randbits(62) + 1,
                origin=self.name,
                size=_stream_size(source, fields["mode"]),
                headers=headers,
                targets=targets,
                chunk_size=self.config.chunk_size,
                window=self.config.window,
                optional=optional,
                **fields,
            )
            ann.model_dump_json()  # headers must survive JSON before anything is written
        except (ValueError, TypeError, PydanticSerializationError) as exc:  # ValidationError too
            raise StreamError(
                f"Cannot announce a {fields['mode']} to {targets}: "
                f"headers must be JSON-serialisable ({exc})."
            ) from exc
        return ann

    def _start_tx(
        self,
        io: TransferIO,
        ann: Announce,
        source: Stream,
        cipher: ChunkCipher | None,
        start: Position | None = None,
        finished: bool = False,
    ) -> StreamFuture:
        future = StreamFuture(ann.sid, dict(ann.headers))
        future.set_size(ann.size)
        task = TxTask(io, ann, source, future, self.config, cipher, start, finished)
        future.task_handle = task
        future.set_progress(task.window.sent.off)
        with self._lock:
            for sid in [s for s, t in self._tx.items() if not t.thread.is_alive()]:
                del self._tx[sid]
            self._tx[ann.sid] = task
        task.start()
        return future

    @staticmethod
    def _resume_point(io: TransferIO, ann: Announce) -> tuple[Position, bool]:
        last = io.last_frame()
        if last is not None:
            return Position(last.seq, last.off + last.len), last.last
        # Every written frame was consumed and trimmed: continue after the slowest ack.
        return min(io.acked(t) for t in ann.targets), False


def _stream_size(source: Stream, mode: str) -> int:
    """``source.get_size()``, checked: bytes, 0 (or None) when unknown."""
    size = source.get_size()
    if size is None:
        return 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise StreamError(
            f"Cannot send_{mode}: {type(source).__name__}.get_size() returned {size!r}; "
            "it must be the size in bytes, or 0 if unknown."
        )
    return size

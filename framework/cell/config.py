"""Tuning knobs of a :class:`~framework.cell.StreamCell`, validated and serialisable.

Chunks are just under a power of two (``REDIS_FACTS.md`` section 2: an exact power of
two costs Redis 25% more memory). Writes and reads move a few chunks per round trip
(4 MiB, less than the ~16 MB that section suggests; see :data:`DEFAULT_BATCH_BYTES`),
and the window holds a few dozen chunks. Secrets (the encryption key) are never part of
this model. This module does no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from framework.exceptions import ConfigurationError

#: Seconds a receiving cell's lease outlives its last refresh (see
#: :mod:`framework.cell.lease`): a killed cell's name is free after this, and a sender
#: that finds a target's lease missing for this long knows nobody receives under it.
LEASE_S = 3.0

__all__ = ["CellConfig"]

MiB = 1 << 20

#: Bytes per chunk frame: 1 MiB - 1 KiB, so jemalloc wastes nothing (see REDIS_FACTS §2).
DEFAULT_CHUNK_SIZE = MiB - 1024
#: Unacknowledged bytes a sender may have in Redis per receiver. NVFlare's default too;
#: with 32 MiB a 1 GB stream spent 2-3x longer waiting for acks (same run, loaded host).
DEFAULT_WINDOW = 64 * MiB
#: A receiver acknowledges after consuming this many bytes (and at the end).
DEFAULT_ACK_INTERVAL = 8 * MiB
#: Bytes of chunk frames the sender writes per pipelined round trip. Redis copies each
#: chunk into the stream and each reply into fresh buffers, so the less of it in flight,
#: the more stays in cache: 1 GB streamed in 0.88-0.91 s with 4 MiB batches and COUNT 4,
#: 0.99-1.17 s with 16 MiB and COUNT 8 (Redis CPU 0.68 s against 0.76-0.85 s; same run,
#: 2-core Xeon); 2 MiB batches cost the receiver more round trips (0.95-0.96 s).
DEFAULT_BATCH_BYTES = 4 * MiB
#: Chunk frames a receiver asks for per XREAD: one batch. Redis builds each reply in
#: memory before sending it (256 MB read back in 35-56 ms with COUNT 4-8, 65 ms with 16,
#: 100 ms with 32). The receivers of a fan-out ask for less
#: (:meth:`CellConfig.read_count_for`).
DEFAULT_READ_COUNT = 4
#: Bytes of chunks a receiver of a fan-out asks for per XREAD (at least one chunk).
FANOUT_REPLY_BYTES = 2 * MiB
#: Seconds without progress after which either side gives up.
DEFAULT_IDLE_TIMEOUT = 60.0
#: Longest time (s) a byte read from a live source waits before it is written.
DEFAULT_LINGER = 0.02
#: Seconds between a sender's heartbeats while its source has nothing new.
DEFAULT_HEARTBEAT = 1.0
#: Seconds a transfer's keys live without being refreshed (safety net against crashes).
DEFAULT_TTL = 600.0
#: Seconds a cell's inbox lives without being refreshed.
DEFAULT_INBOX_TTL = 7 * 86400.0
#: Largest blob a receiver accepts (NVFlare's ``streaming_max_blob_size``).
DEFAULT_MAX_BLOB_SIZE = 4 << 30
#: Seconds close() waits in total for the cell's threads.
DEFAULT_CLOSE_TIMEOUT = 5.0


class CellConfig(BaseModel):
    """Sizes and timeouts of byte-stream transfers.

    The sender's values travel in the announcement, so receivers follow the sender's
    chunk size and window; each receiver uses its own ack interval and timeouts. Idle
    timeouts measure whether the other side is alive: a sender whose source is slow
    writes what it has within ``linger`` seconds and posts a heartbeat every
    ``heartbeat`` seconds while it has nothing new.

    Raises:
        ConfigurationError: If a value is out of range or values contradict each other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, le=256 * MiB)
    window: int = Field(DEFAULT_WINDOW, ge=1)
    ack_interval: int = Field(DEFAULT_ACK_INTERVAL, ge=1)
    batch_bytes: int = Field(DEFAULT_BATCH_BYTES, ge=1)
    read_count: int = Field(DEFAULT_READ_COUNT, ge=1, le=1024)
    idle_timeout: float = Field(DEFAULT_IDLE_TIMEOUT, gt=0)
    linger: float = Field(DEFAULT_LINGER, ge=0)
    heartbeat: float = Field(DEFAULT_HEARTBEAT, gt=0)
    #: Refuse plaintext transfers, in both directions (needs the cell key).
    require_secure: bool = False
    ttl: float = Field(DEFAULT_TTL, ge=1)
    inbox_ttl: float = Field(DEFAULT_INBOX_TTL, ge=1)
    max_blob_size: int = Field(DEFAULT_MAX_BLOB_SIZE, ge=0)
    close_timeout: float = Field(DEFAULT_CLOSE_TIMEOUT, gt=0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(f"Invalid byte-stream settings: {exc}") from exc

    def read_count_for(self, receivers: int, chunk_size: int) -> int:
        """Chunks per ``XREAD`` of each of ``receivers`` receivers of one transfer.

        Redis builds each reply whole before sending it, and copies every chunk once per
        receiver. With one receiver, large replies mean few round trips. With several,
        Redis is the bottleneck, and a reply that stays in its CPU cache while it is
        built and written costs it much less; but each round trip also costs a receiver
        0.1-0.3 ms of Python. Each receiver asks for about :data:`FANOUT_REPLY_BYTES`
        (two default chunks). Fan-out of 256 MB to 4 receivers, on one 2-core host:
        Redis CPU per transfer 0.21-0.23 s with 1 chunk per XREAD, 0.24-0.26 s with 2,
        0.32-0.34 s with 8 (transfer 0.33-0.35 s, 0.35-0.37 s, 0.38-0.44 s); 512 KiB
        chunks 2 or 4 per XREAD: 0.21 s and 0.33 s. On another (2-core EPYC, 1 MiB of
        L2 per core), in interleaved runs, Redis CPU was the same with 1 and 2 chunks
        (0.47-0.53 s), each receiver's CPU 0.15-0.16 s against 0.13-0.14 s, and the
        transfer 0.71-0.78 s against 0.64-0.73 s; set against the plain redis-py
        fan-out in the same run, 0.80-0.84x its time with 1 chunk (3 runs), 0.60-0.83x
        with 2 (7 runs, median 0.69x).

        Args:
            receivers: Targets of the transfer.
            chunk_size: The transfer's chunk size (bytes).
        """
        if receivers <= 1:
            return self.read_count
        return max(1, min(self.read_count, FANOUT_REPLY_BYTES // max(1, chunk_size)))

    @model_validator(mode="after")
    def _consistent(self) -> CellConfig:
        """The window must hold a chunk, and acks must come before the window fills."""
        if self.window < self.chunk_size:
            raise ConfigurationError(
                f"window ({self.window}) must be at least chunk_size ({self.chunk_size})."
            )
        if self.ack_interval > self.window:
            raise ConfigurationError(
                f"ack_interval ({self.ack_interval}) must not exceed window ({self.window})."
            )
        if self.heartbeat * 2 > self.idle_timeout:
            raise ConfigurationError(
                f"heartbeat ({self.heartbeat} s) must be at most half of idle_timeout "
                f"({self.idle_timeout} s), or receivers time out on a live sender."
            )
        return self

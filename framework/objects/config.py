"""Tuning knobs of a :class:`~framework.objects.RedisStreamableEngine`, validated.

This module does no I/O.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from framework.exceptions import ConfigurationError

__all__ = ["EngineConfig"]

#: Payloads up to this many bytes travel as mailbox messages (one XADD per target);
#: larger ones ride the cell's byte streams, written once for all targets.
DEFAULT_INLINE_LIMIT = 1 << 20
#: Seconds a receiving session may go without a message before it is ended (TIMEOUT).
DEFAULT_IDLE_TIMEOUT = 300.0
#: Seconds a mailbox lives without being read or written (crash safety net).
DEFAULT_TTL = 600.0
#: Threads that read the mailbox and run consumers (a session uses one at a time).
DEFAULT_WORKERS = 4
#: Seconds after which an unanswered small object is sent again (applied once anyway).
DEFAULT_RESEND_AFTER = 2.0
#: Seconds close() waits in total for consumers and threads.
DEFAULT_CLOSE_TIMEOUT = 5.0
#: Seconds the cells' clocks may be apart (first objects older than their timeout plus
#: this are refused as replays).
DEFAULT_MAX_CLOCK_SKEW = 60.0


class EngineConfig(BaseModel):
    """Sizes and timeouts of the object protocol.

    Raises:
        ConfigurationError: If a value is out of range.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    inline_limit: int = Field(DEFAULT_INLINE_LIMIT, ge=0, le=256 << 20)
    idle_timeout: float = Field(DEFAULT_IDLE_TIMEOUT, gt=0)
    ttl: float = Field(DEFAULT_TTL, ge=1)
    workers: int = Field(DEFAULT_WORKERS, ge=1, le=256)
    resend_after: float = Field(DEFAULT_RESEND_AFTER, gt=0)
    close_timeout: float = Field(DEFAULT_CLOSE_TIMEOUT, gt=0)
    max_clock_skew: float = Field(DEFAULT_MAX_CLOCK_SKEW, ge=0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(f"Invalid object-protocol settings: {exc}") from exc

"""Move Python objects and byte streams between processes through Redis."""

from __future__ import annotations

__version__ = "0.1.0"

"""``FLContext``, ``Signal`` and ``StreamContextKey``: what NVFlare passes alongside objects.

:class:`FLContext` is a property bag with NVFlare's accessors; the run's abort
:class:`Signal` lives in it. :class:`Signal` is NVFlare's signal plus :meth:`Signal.wait`,
so a waiting sender wakes the moment it is triggered instead of polling. This module
does no I/O.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["FLContext", "FLContextKey", "Signal", "StreamContextKey"]


class StreamContextKey:
    """Keys the engine sets in the receiver's ``stream_ctx``."""

    CHANNEL = "__channel__"
    TOPIC = "__topic__"
    RC = "__RC__"


class FLContextKey:
    """Property keys with a meaning to the engine (NVFlare's names)."""

    RUN_ABORT_SIGNAL = "__run_abort_signal__"
    IDENTITY_NAME = "__identity_name__"
    #: The cell name of the site that sent a received stream.
    PEER_NAME = "__peer_name__"


class Signal:
    """A one-shot flag with a value, optionally chained to a parent signal.

    Args:
        parent: A signal whose trigger also counts as this one's.
    """

    def __init__(self, parent: Signal | None = None) -> None:
        self._value: Any = None
        self._trigger_time: float | None = None
        self._event = threading.Event()
        self._parent = parent

    def trigger(self, value: Any) -> None:
        """Trigger the signal with ``value``; waiters wake at once."""
        self._value = value
        self._trigger_time = time.time()
        self._event.set()

    @property
    def value(self) -> Any:
        """The value given to :meth:`trigger` (None before)."""
        return self._value

    @property
    def trigger_time(self) -> float | None:
        """When the signal was triggered (``time.time()``), or None."""
        return self._trigger_time

    @property
    def triggered(self) -> bool:
        """True once this signal or its parent is triggered."""
        return self._event.is_set() or (self._parent is not None and self._parent.triggered)

    def reset(self, value: Any = None) -> None:
        """Clear the trigger and set the value to ``value``."""
        self._value = value
        self._trigger_time = None
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the trigger; return :attr:`triggered`."""
        if self._parent is None:
            return self._event.wait(max(0.0, timeout))
        deadline = time.monotonic() + timeout
        # A parent cannot wake this event, so check it in short slices.
        while not self.triggered and (left := deadline - time.monotonic()) > 0:
            self._event.wait(min(left, 0.05))
        return self.triggered


@dataclass
class _Prop:
    value: Any
    private: bool
    sticky: bool


class FLContext:
    """Properties of the current run, passed to producers, consumers and callbacks."""

    def __init__(self) -> None:
        self._props: dict[str, _Prop] = {}
        self._lock = threading.Lock()

    def set_prop(self, key: str, value: Any, private: bool = True, sticky: bool = True) -> bool:
        """Set property ``key``; returns True (NVFlare's signature and result)."""
        with self._lock:
            self._props[key] = _Prop(value, private, sticky)
        return True

    def get_prop(self, key: str, default: Any = None) -> Any:
        """Return property ``key``, or ``default`` when it is absent."""
        prop = self._props.get(key)
        return default if prop is None else prop.value

    def remove_prop(self, key: str) -> None:
        """Remove property ``key`` if present."""
        with self._lock:
            self._props.pop(key, None)

    def get_all_public_props(self) -> dict[str, Any]:
        """Every property set with ``private=False``."""
        return {k: p.value for k, p in list(self._props.items()) if not p.private}

    def get_run_abort_signal(self) -> Signal | None:
        """The run's abort signal, or None if none was set."""
        signal = self.get_prop(FLContextKey.RUN_ABORT_SIGNAL)
        return signal if isinstance(signal, Signal) else None

    def set_run_abort_signal(self, signal: Signal) -> None:
        """Make ``signal`` the run's abort signal."""
        self.set_prop(FLContextKey.RUN_ABORT_SIGNAL, signal, private=True, sticky=True)

    def get_identity_name(self, default: str = "") -> str:
        """This site's name (the engine sets it to its cell's name)."""
        name = self.get_prop(FLContextKey.IDENTITY_NAME, default)
        return name if isinstance(name, str) else default

    def get_peer_name(self, default: str = "") -> str:
        """On a receiver, the name of the cell that sent the stream."""
        name = self.get_prop(FLContextKey.PEER_NAME, default)
        return name if isinstance(name, str) else default

    def __repr__(self) -> str:
        return f"FLContext(props={sorted(self._props)})"

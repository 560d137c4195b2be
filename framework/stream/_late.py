"""Evicting proxies of an acknowledging consumer: after the resolve and the acknowledgement.

A consumer in a durable group acknowledges a message once the caller comes back for
more. A proxy that evicts its object as it resolves could delete an object whose
message was never acknowledged: if the process then dies, the message goes to another
member, whose proxy finds nothing. So such a proxy only reads its object, and the
object is evicted once both have happened, in either order: the proxy resolved here,
and its message was acknowledged. A copy of the proxy pickled to another process is an
ordinary evicting proxy there (ProxyStore's behaviour). No Redis I/O besides the store's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from framework.exceptions import FrameworkError
from framework.proxy import Proxy
from framework.store.base import Store
from framework.store.factory import StoreFactory

__all__ = ["LateEvictions"]

logger = logging.getLogger(__name__)


@dataclass
class _State:
    store: Store
    resolved: bool = False
    acked: bool = False


class _ResolvedHere(StoreFactory):
    """A store factory that reads its object and reports the resolve, instead of evicting."""

    def __init__(
        self, key: str, store: Store, on_resolved: Callable[[str], None], allow_pickle: bool
    ) -> None:
        super().__init__(key, store.config(), evict=False, store=store, allow_pickle=allow_pickle)
        self._on_resolved = on_resolved

    def _fetch(self) -> Any:
        target = super()._fetch()
        self._on_resolved(self.key)
        return target

    def __reduce__(self) -> tuple[Any, ...]:
        # Elsewhere it is an ordinary evicting factory: this consumer's acks are not there.
        state = {**self.__getstate__(), "evict": True}
        return _evicting, (state,)


def _evicting(state: dict[str, Any]) -> StoreFactory:
    factory = StoreFactory.__new__(StoreFactory)
    factory.__setstate__(state)
    return factory


class LateEvictions:
    """The evicting proxies an acknowledging consumer handed out, until their objects go."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}

    def proxy(self, store: Store, key: str, *, allow_pickle: bool = True) -> Proxy[Any]:
        """A proxy of ``key`` whose object is evicted once resolved and acknowledged.

        With ``allow_pickle=False`` it refuses an object stored as a pickle.
        """
        with self._lock:
            self._states[key] = _State(store)
        return Proxy(_ResolvedHere(key, store, self._resolved, allow_pickle))

    def acknowledged(self) -> None:
        """Every proxy handed out so far had its message acknowledged."""
        with self._lock:
            due = [(key, s.store) for key, s in self._states.items() if s.resolved]
            for key, _ in due:
                del self._states[key]
            for state in self._states.values():
                state.acked = True
        self._evict(due)

    def _resolved(self, key: str) -> None:
        with self._lock:
            state = self._states.get(key)
            if state is None:
                return
            if not state.acked:
                state.resolved = True
                return
            del self._states[key]
        self._evict([(key, state.store)])

    @staticmethod
    def _evict(due: list[tuple[str, Store]]) -> None:
        for store in {id(s): s for _, s in due}.values():
            keys = [key for key, s in due if s is store]
            try:
                store.evict_batch(keys)
            except FrameworkError as exc:  # the objects stay until their TTL: say so
                logger.warning("Could not evict %d consumed object(s): %s", len(keys), exc)

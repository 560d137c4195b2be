"""Helpers that run in child processes (importable, so ``spawn`` can find them)."""

from __future__ import annotations

import pickle
from typing import Any

from framework.store import extract, registered_stores, unregister_store

__all__ = ["resolve_pickled_proxy"]


def resolve_pickled_proxy(data: bytes) -> Any:
    """Unpickle a proxy, resolve it and return its target (run this in a fresh process).

    The proxy rebuilds its store from the pickled config through the registry, as a
    consumer process would. Every store registered here is closed afterwards.

    Args:
        data: ``pickle.dumps(proxy)`` from the producing process (trusted test data).

    Returns:
        The proxy's target.
    """
    try:
        proxy = pickle.loads(data)  # noqa: S301 - bytes pickled by the calling test
        return extract(proxy)
    finally:
        for store in registered_stores():
            unregister_store(store)
            store.close()

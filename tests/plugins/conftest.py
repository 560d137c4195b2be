"""Store test fixtures: a guard against stores left in the process-wide registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework.store import registered_stores, unregister_store


@pytest.fixture(autouse=True)
def _no_leaked_store_registrations() -> Iterator[None]:
    """Fail a test that leaves a store registered (proxystore's registry guard)."""
    before = {id(store) for store in registered_stores()}
    yield
    leaked = [store for store in registered_stores() if id(store) not in before]
    for store in leaked:
        unregister_store(store)
        store.close()
    if leaked:
        pytest.fail(f"The test left stores registered: {leaked}.", pytrace=False)

"""Keep the façade complete: every public name of the store modules is re-exported."""

from __future__ import annotations

import framework.store
import framework.testing
from framework.store import base, config, layout, protocols, proxy, redis, registry


def test_store_facade_is_complete() -> None:
    exported = set(framework.store.__all__)
    assert exported == set(dir(framework.store)) & exported
    for module in (base, config, protocols, proxy, redis, registry):
        missing = set(module.__all__) - exported - {"ENTRY_POINT_GROUP"}
        assert not missing, f"{module.__name__} exports {missing} not re-exported"
    assert {"MAX_VALUE_BYTES", "PART_BYTES"} <= exported
    assert set(layout.__all__) >= {"MAX_VALUE_BYTES", "PART_BYTES"}


def test_testing_package_exports_the_contract() -> None:
    assert framework.testing.__all__ == ["StoreContractTests"]

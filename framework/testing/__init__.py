"""Test helpers for code built on the framework (needs pytest).

* :class:`StoreContractTests`: the contract every object store must meet; subclass it
  and override its ``store`` fixture to run it against your own store plugin.
"""

from __future__ import annotations

from framework.testing.store_contract import StoreContractTests

__all__ = ["StoreContractTests"]

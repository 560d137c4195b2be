"""Test helpers for code built on the framework.

* A pytest plugin (:mod:`framework.testing.plugin`, registered through the ``pytest11``
  entry point, so it loads in any pytest run where the package is installed) with
  fixtures for a fakeredis connection, an embedded real Redis and a fakeredis TCP server
  that child processes can reach.
* :class:`StoreContractTests`: the contract every object store must meet; subclass it
  and override its ``store`` fixture to run it against your own store plugin.

Importing this package does not import pytest: only the names that need it do, on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from framework.testing.store_contract import StoreContractTests

__all__ = ["StoreContractTests"]


def __getattr__(name: str) -> Any:
    # Lazy: the contract suite imports pytest, which library users need not install.
    if name == "StoreContractTests":
        from framework.testing.store_contract import StoreContractTests

        return StoreContractTests
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

from __future__ import annotations

import importlib
import inspect

import pytest


@pytest.mark.parametrize("name", ["framework.stream", "framework.pubsub"])
def test_all_lists_every_public_member(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_") and not inspect.ismodule(value) and attr != "annotations"
    }
    assert set(module.__all__) == public
    assert module.__all__ == sorted(module.__all__, key=lambda n: (not n.isupper(), n))

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from framework_plugins.file import FileStore
from framework_plugins.memory import MemoryStore

from framework.exceptions import StoreError, UnknownStoreKindError
from framework.store import (
    RedisStore,
    StoreConfig,
    get_or_create_store,
    get_store,
    register_store,
    register_store_kind,
    registered_stores,
    store_kinds,
    unregister_store,
    unregister_store_kind,
)


@pytest.fixture
def memory() -> Iterator[MemoryStore]:
    with MemoryStore("reg") as store:
        yield store


def test_kinds_are_builtin_plus_entry_points() -> None:
    kinds = store_kinds()
    assert kinds["redis"] is RedisStore
    assert kinds["memory"] is MemoryStore
    assert kinds["file"] is FileStore


def test_register_get_unregister(memory: MemoryStore) -> None:
    assert get_store("reg") is None
    register_store(memory)
    register_store(memory)  # the same store again is fine
    assert get_store("reg") is memory
    with MemoryStore("reg") as twin:
        with pytest.raises(StoreError, match="already registered"):
            register_store(twin)
        register_store(twin, exist_ok=True)
        assert get_store("reg") is twin
        unregister_store("reg")
    assert get_store("reg") is None
    unregister_store("reg")  # unknown names are ignored


def test_equal_config_is_reused(memory: MemoryStore) -> None:
    register_store(memory)
    try:
        assert get_or_create_store(memory.config()) is memory
    finally:
        unregister_store(memory)


def test_same_name_other_config_is_never_reused(memory: MemoryStore) -> None:
    """proxystore matches by name only (its weakness 8); we match whole configs."""
    register_store(memory)
    with MemoryStore("reg") as other:
        try:
            built = get_or_create_store(other.config())
            assert built is not memory
            assert built.config() == other.config()
            assert get_store("reg") is memory  # the registered one stays
            assert built in registered_stores()
            assert get_or_create_store(other.config()) is built
        finally:
            unregister_store(memory)
            unregister_store(built)
            built.close()


def test_unregistered_creation(memory: MemoryStore) -> None:
    built = get_or_create_store(memory.config(), register=False)
    with built:
        assert built is not memory
        assert get_store("reg") is None


@pytest.mark.parametrize(
    "kind", ["framework_plugins.memory.MemoryStore", "os.system", "builtins.eval"]
)
def test_no_import_path_is_ever_followed(kind: str) -> None:
    before = set(sys.modules)
    with pytest.raises(UnknownStoreKindError, match="not registered"):
        get_or_create_store(StoreConfig(kind=kind, name="evil"))
    assert set(sys.modules) - before <= {"framework_plugins.memory", "framework_plugins.file"}


def test_programmatic_kinds() -> None:
    class Custom(MemoryStore):
        kind = "custom-memory"

    register_store_kind("custom-memory", Custom)
    try:
        with pytest.raises(StoreError, match="already registered"):
            register_store_kind("custom-memory", MemoryStore)
        with pytest.raises(StoreError, match="from_config"):
            register_store_kind("broken", object)
        assert store_kinds()["custom-memory"] is Custom
        with Custom("c") as store:
            built = get_or_create_store(store.config(), register=False)
            with built:
                assert type(built) is Custom
    finally:
        unregister_store_kind("custom-memory")
    assert "custom-memory" not in store_kinds()


def test_configs_with_unknown_options_are_configuration_errors() -> None:
    from framework.exceptions import ConfigurationError

    config = StoreConfig(kind="memory", name="m", options={"colour": "red"})
    with pytest.raises(ConfigurationError, match="does not fit"):
        MemoryStore.from_config(config)
    redis_config = StoreConfig(
        kind="redis", name="r", options={"url": "redis://127.0.0.1:1/0", "colour": "red"}
    )
    with pytest.raises(ConfigurationError, match="version lacks"):
        RedisStore.from_config(redis_config)

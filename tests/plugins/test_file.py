from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
from framework_plugins.file import FileStore

from framework.exceptions import StoreError
from framework.store import get_factory, store_kinds
from framework.testing import StoreContractTests
from framework.testing.processes import resolve_pickled_proxy


class TestFileStoreContract(StoreContractTests):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[FileStore]:
        with FileStore("files", directory=tmp_path / "objects") as store:
            yield store


def test_file_kind_comes_from_the_entry_point() -> None:
    assert store_kinds()["file"] is FileStore


def test_one_file_per_object_and_no_leftovers(tmp_path: Path) -> None:
    with FileStore(directory=tmp_path) as store:
        keys = store.put_batch([b"a", b"b"])
        assert sorted(os.listdir(tmp_path)) == sorted(keys)
        store.get(keys[0], evict=True)
        store.evict(keys[1])
        assert os.listdir(tmp_path) == []


def test_config_records_an_absolute_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with FileStore(directory="relative") as store:
        assert store.config().options["directory"] == str(tmp_path / "relative")


def test_unusable_directory_raises_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StoreError, match="directory"):
        FileStore(directory=blocker / "sub")


def test_partial_files_are_never_read(tmp_path: Path) -> None:
    with FileStore(directory=tmp_path) as store:
        key = store.put("x")
        (tmp_path / f".tmp-{key}").write_bytes(b"garbage")
        assert store.get(key) == "x"
        assert not store.exists(f".tmp-{key}")


def test_proxy_resolves_in_another_process(tmp_path: Path) -> None:
    with FileStore("shared-dir", directory=tmp_path) as store:
        proxy = store.proxy({"across": "processes"}, evict=True)
        key = get_factory(proxy).key  # type: ignore[attr-defined]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            assert pool.apply(resolve_pickled_proxy, (pickle.dumps(proxy),)) == {
                "across": "processes"
            }
        assert not store.exists(key)

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import pickle
import re
import stat
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import framework_plugins.file as file_module
import pytest
from framework_plugins.file import FileStore, InvalidObjectFileError

from framework.exceptions import ConfigurationError, StoreError
from framework.store import Store, get_factory, store_kinds
from framework.store.base import Unreadable
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


# -- files the store did not write -----------------------------------------------------------

T = TypeVar("T")

_HEAD = struct.Struct(">4sdq")  # the object head: mark, expiry (Unix time), reads left


def _head(expires: float, left: int) -> bytes:
    return _HEAD.pack(b"FWO1", expires, left)


def _without_hanging(call: Callable[[], T], directory: Path, timeout: float = 10.0) -> T:
    """Return ``call()`` run in a thread; fail the test instead of hanging the suite."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # Let an open() that waits for a writer return, so the thread can end; a read on a
        # FIFO opened read-write cannot be woken and is left to the daemon thread.
        for path in directory.iterdir():
            if stat.S_ISFIFO(path.lstat().st_mode):
                with contextlib.suppress(OSError):  # ENXIO: nobody waits on this one
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"blocked for {timeout} s")
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def _snapshot(directory: Path) -> dict[str, int]:
    """Names and file types in ``directory``, to show nothing was renamed or deleted."""
    return {path.name: stat.S_IFMT(path.lstat().st_mode) for path in directory.iterdir()}


@pytest.mark.parametrize("evict", [False, True])
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param(b"", "0 bytes long, shorter than the 20-byte head", id="empty"),
        pytest.param(b"\x00\x01\x02", "3 bytes long, shorter than the 20-byte head", id="3B"),
        pytest.param(_head(0.0, 0)[:19], "19 bytes long, shorter than the 20-byte head", id="19B"),
        pytest.param(
            _head(math.nan, 0) + b"x", "invalid head (expiry nan, reads left 0)", id="nan"
        ),
        pytest.param(
            _head(-1.0, 0) + b"x", "invalid head (expiry -1.0, reads left 0)", id="neg-ttl"
        ),
        pytest.param(
            _head(0.0, -2) + b"x", "invalid head (expiry 0.0, reads left -2)", id="neg-reads"
        ),
        # Text or zeros whose first bytes would pass as expiry and count: no mark.
        pytest.param(
            b"not an object file, just some text" * 3, "without this store's mark", id="text"
        ),
        pytest.param(bytes(4096), "without this store's mark", id="zeros"),
    ],
)
def test_a_truncated_or_forged_file_is_refused_and_kept(
    tmp_path: Path, content: bytes, reason: str, evict: bool
) -> None:
    with FileStore("files", directory=tmp_path) as store:
        key = uuid.uuid4().hex
        (tmp_path / key).write_bytes(content)
        assert not store.exists(key)
        # Not absent: a default does not hide it.
        with pytest.raises(InvalidObjectFileError, match=re.escape(reason)) as caught:
            store.get(key, default=None, evict=evict)
        assert (caught.value.key, caught.value.store) == (key, "files")
        assert caught.value.path == str(tmp_path / key)
        assert key in str(caught.value)
        assert isinstance(caught.value, StoreError)
        assert os.listdir(tmp_path) == [key]  # neither deleted nor left as a .claim-*
        assert (tmp_path / key).read_bytes() == content
        store.evict(key)  # not this store's file: a user deletes it by hand
        assert os.listdir(tmp_path) == [key]
        assert (tmp_path / key).read_bytes() == content


def _make_fifo(path: Path, tmp_path: Path) -> None:
    os.mkfifo(path)


def _make_directory(path: Path, tmp_path: Path) -> None:
    path.mkdir()


def _make_symlink_to_an_object(path: Path, tmp_path: Path) -> None:
    # A valid counted object elsewhere: following the link would read and rewrite it.
    with FileStore(directory=tmp_path / "elsewhere") as other:
        key = other.put("elsewhere", readers=2)
    path.symlink_to(tmp_path / "elsewhere" / key)


def _make_garbage_file(path: Path, tmp_path: Path) -> None:
    path.write_bytes(b"someone else's notes")


# evict(key) deleted the FIFO, the link and the garbage file, and failed on the directory.
@pytest.mark.parametrize("op", ["get", "get_evict", "exists", "evict"])
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (_make_fifo, "a FIFO (named pipe)"),
        (_make_directory, "a directory"),
        (_make_symlink_to_an_object, "a symbolic link"),
        (_make_garbage_file, "without this store's mark"),
    ],
)
def test_anything_but_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, make: Callable[[Path, Path], None], kind: str, op: str
) -> None:
    directory = tmp_path / "objects"
    with FileStore("files", directory=directory) as store:
        key = uuid.uuid4().hex
        make(directory / key, tmp_path)
        before = _snapshot(directory)
        elsewhere = {p: p.read_bytes() for p in (tmp_path / "elsewhere").glob("*")}
        if op == "exists":
            assert _without_hanging(lambda: store.exists(key), directory) is False
        elif op == "evict":
            _without_hanging(lambda: store.evict(key), directory)
        else:
            evict = op == "get_evict"
            with pytest.raises(InvalidObjectFileError, match=re.escape(kind)):
                _without_hanging(lambda: store.get(key, default=None, evict=evict), directory)
        assert _snapshot(directory) == before  # nothing renamed, deleted or left behind
        assert {p: p.read_bytes() for p in elsewhere} == elsewhere  # the target untouched


def test_an_invalid_file_spoils_no_other_object_of_an_evicting_read(tmp_path: Path) -> None:
    with FileStore(directory=tmp_path) as store:
        first, last = store.put_batch(["first", "last"])
        fifo = uuid.uuid4().hex
        os.mkfifo(tmp_path / fifo)
        # What the stream consumer reads through: the good objects survive the bad one.
        objs = _without_hanging(lambda: store._get_each([first, fifo, last], evict=True), tmp_path)
        assert objs[0] == "first"
        assert isinstance(objs[1], Unreadable)
        assert isinstance(objs[1].error, InvalidObjectFileError)
        assert objs[2] == "last"
        assert os.listdir(tmp_path) == [fifo]


def test_invalid_object_file_error_pickles(tmp_path: Path) -> None:
    error = InvalidObjectFileError("k" * 32, "files", tmp_path / "k", "a directory, not a file")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is InvalidObjectFileError
    assert (copy.key, copy.store, copy.path, copy.reason) == (
        error.key,
        error.store,
        error.path,
        error.reason,
    )
    assert str(copy) == str(error)


# -- a failed read or write loses nothing ------------------------------------------------------


def _no_write_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an object file for writing is refused, as for a file of another user."""
    original = file_module._open_regular

    def refusing(path: Path, flags: int) -> int | None:
        if flags & os.O_RDWR:
            raise PermissionError(13, "Permission denied", str(path))
        return original(path, flags)

    monkeypatch.setattr(file_module, "_open_regular", refusing)


def test_a_plain_read_needs_no_write_access_and_an_evicting_one_puts_the_file_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore("files", directory=tmp_path) as store:
        key, counted = store.put("plain"), store.put("counted", readers=2)
        _no_write_access(monkeypatch)
        assert store.get(key) == "plain"
        with pytest.raises(StoreError, match="Permission denied"):
            store.get(key, evict=True)  # it could not claim and read it: it is kept
        with pytest.raises(StoreError, match="needs write access"):
            store.get(counted)
        monkeypatch.undo()
        assert store.get(key, evict=True) == "plain"
        assert store.get(counted) == "counted"
        assert sorted(os.listdir(tmp_path)) == [counted]  # no .claim-* left


def test_the_last_counted_read_stands_when_the_file_cannot_be_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FileStore("files", directory=tmp_path) as store:
        key = store.put("counted", readers=2)
        assert store.get(key) == "counted"

        def refused(self: Path, missing_ok: bool = False) -> None:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "unlink", refused)  # as in a read-only directory
        assert store.get(key) == "counted"  # the last read: consumed, not lost
        assert not store.exists(key)
        assert store.get(key, default=None) is None


def test_a_failed_batch_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, calls = os.replace, []

    def full_at_the_second(src: Any, dst: Any) -> None:
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        original(src, dst)

    with FileStore("files", directory=tmp_path) as store:
        monkeypatch.setattr(os, "replace", full_at_the_second)
        with pytest.raises(StoreError, match="No space left on device"):
            store.put_batch(["a", "b", "c"])
        assert os.listdir(tmp_path) == []  # neither the first object nor a .tmp-*


def test_a_store_rebuilt_from_its_config_creates_no_directory(tmp_path: Path) -> None:
    directory = tmp_path / "mount" / "objects"
    with FileStore("files", directory=directory) as store:
        config = store.config()
    directory.rmdir()
    for rebuild in (FileStore.from_config, Store.from_config):
        with pytest.raises(StoreError, match="does not exist here"):
            rebuild(config)
    assert not directory.exists()  # a config read from Redis made no directory
    directory.mkdir()
    with FileStore.from_config(config) as again:
        assert again.directory == directory


def test_a_reader_count_beyond_64_bits_is_refused(tmp_path: Path) -> None:
    with FileStore("files", directory=tmp_path) as store:
        with pytest.raises(ConfigurationError, match="readers must be a positive int below"):
            store.put("x", readers=2**63)
        assert store.get(store.put("x", readers=2**63 - 1)) == "x"


def test_an_unreadable_object_taken_by_an_evicting_read_is_put_back(tmp_path: Path) -> None:
    with FileStore("files", directory=tmp_path) as store:
        key, good = store.put("corrupt me"), store.put("fine")
        path = tmp_path / key
        path.write_bytes(path.read_bytes()[: _HEAD.size] + b"garbage, not a frame")
        objs = store._get_each([key, good], evict=True)
        assert isinstance(objs[0], Unreadable)
        assert objs[1] == "fine"
        # Kept as evidence, with a 24-hour expiry; the good one was evicted.
        assert os.listdir(tmp_path) == [key]
        assert path.read_bytes()[_HEAD.size :] == b"garbage, not a frame"
        _, expires, left = _HEAD.unpack(path.read_bytes()[: _HEAD.size])
        assert left == 0
        assert 23 * 3600 < expires - time.time() <= 24 * 3600

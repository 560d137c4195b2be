"""StreamFuture, Message and the ready-made streams (no Redis)."""

from __future__ import annotations

import io
import threading
import time

import pytest

from framework.cell import BlobStream, BytesStream, FileStream, IterStream, Message, Stream
from framework.cell.streams import as_stream
from framework.cell.types import StreamFuture, StreamTaskSpec
from framework.exceptions import ChecksumError, StreamCancelled, StreamError


class Handle(StreamTaskSpec):
    def __init__(self) -> None:
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_future_result_and_callbacks_run_once_without_the_future() -> None:
    future = StreamFuture(7, {"a": 1})
    calls: list[tuple[object, ...]] = []
    future.add_done_callback(lambda *a, **k: calls.append((a, k)), 1, x=2)
    assert future.running()
    assert not future.done()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)
    future.set_result(42)
    future.set_result(43)  # ignored: already done
    future.set_exception(StreamError("late"))  # ignored too
    assert future.result() == 42
    assert future.exception() is None
    assert calls == [((1,), {"x": 2})]
    future.add_done_callback(lambda: calls.append(("late",)))
    assert calls[-1] == ("late",)
    assert future.get_stream_id() == 7
    assert future.get_headers() == {"a": 1}


def test_future_wraps_foreign_exceptions_in_stream_error() -> None:
    future = StreamFuture(1)
    cause = ChecksumError("bad crc")
    future.set_exception(cause)
    exc = future.exception()
    assert isinstance(exc, StreamError)
    assert exc.__cause__ is cause
    assert "ChecksumError: bad crc" in str(exc)
    with pytest.raises(StreamError):
        future.result()


def test_future_cancel_calls_the_task_handle() -> None:
    handle = Handle()
    future = StreamFuture(3, task_handle=handle)
    assert future.cancel() is True
    assert handle.cancelled == 1
    assert future.cancelled()
    assert future.done()
    with pytest.raises(StreamCancelled):
        future.result()
    assert future.cancel() is False  # already done


class _FinishesDuringCancel(StreamTaskSpec):
    """The transfer finishes while ``cancel()`` runs: in its note, or in the handle's cancel."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.future: StreamFuture | None = None

    def cancel(self) -> None:
        if self.where == "cancel":
            self._finish()

    def cancel_note(self) -> str:
        if self.where == "note":
            self._finish()
        return ""

    def _finish(self) -> None:
        assert self.future is not None
        self.future.set_result(1000)  # the sender thread, done meanwhile


@pytest.mark.parametrize("where", ["note", "cancel"])
def test_a_cancel_that_races_the_end_is_either_a_cancel_or_a_success(where: str) -> None:
    """Before, cancel() returned True and cancelled() said so, yet result() gave 1000."""
    handle = _FinishesDuringCancel(where)
    future = StreamFuture(1, task_handle=handle)
    handle.future = future
    won = future.cancel()
    assert future.cancelled() is won
    if won:
        with pytest.raises(StreamCancelled):
            future.result(0)
    else:
        assert future.result(0) == 1000


def test_future_result_waits_for_another_thread_and_progress_is_monotonic() -> None:
    future = StreamFuture(1)
    future.set_size(10)
    future.set_progress(5)
    future.set_progress(3)
    assert (future.get_size(), future.get_progress()) == (10, 5)
    threading.Timer(0.05, future.set_result, ("ok",)).start()
    started = time.monotonic()
    assert future.result(timeout=5) == "ok"
    assert time.monotonic() - started < 2


def test_a_failing_done_callback_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    future = StreamFuture(1)
    future.add_done_callback(lambda: 1 / 0)
    future.set_result(None)
    assert "done-callback" in caplog.text


def test_message_headers() -> None:
    msg = Message({"é": "ü"}, b"x")
    msg.set_header("a", 1)
    msg.add_headers({"b": 2})
    msg.remove_header("b")
    assert msg.get_header("a") == 1
    assert msg.get_header("b", "none") == "none"
    assert msg.headers == {"é": "ü", "a": 1}


def read_all(stream: Stream, size: int) -> bytes:
    out = bytearray()
    while chunk := stream.read(size):
        assert len(chunk) <= size
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_bytes_stream_over_parts_is_zero_copy_and_seekable(size: int) -> None:
    parts = [b"abc", bytearray(b"defg"), memoryview(b"hij")]
    stream = BytesStream(parts, headers={"h": 1})
    assert stream.get_size() == 10
    assert stream.get_headers() == {"h": 1}
    assert read_all(stream, size) == b"abcdefghij"
    stream.seek(4)
    assert stream.get_pos() == 4
    assert read_all(stream, size) == b"efghij"
    first = BytesStream(parts[1]).read(100)
    assert isinstance(first, memoryview)
    assert first.obj is parts[1]
    with pytest.raises(StreamError):
        stream.seek(11)
    assert BlobStream is BytesStream


def test_file_stream_by_path_and_object(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    stream = FileStream(path)
    assert stream.get_size() == 10
    assert read_all(stream, 4) == b"0123456789"
    stream.seek(8)
    assert read_all(stream, 4) == b"89"
    stream.close()
    buffer = io.BytesIO(b"xyz")
    assert read_all(FileStream(buffer), 2) == b"xyz"
    assert not buffer.closed
    with pytest.raises(StreamError, match="Cannot open"):
        FileStream(tmp_path / "missing")


def test_iter_stream_splits_large_items_and_cannot_seek() -> None:
    stream = IterStream(iter([b"ab", b"", b"cdefg"]))
    assert read_all(stream, 3) == b"abcdefg"
    with pytest.raises(StreamError, match="not seekable"):
        stream.seek(0)


def test_as_stream() -> None:
    stream = BytesStream(b"x")
    assert as_stream(stream) is stream
    assert read_all(as_stream([b"a", b"b"]), 5) == b"ab"
    with pytest.raises(StreamError, match="bytes-like"):
        as_stream(12)

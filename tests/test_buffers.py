from __future__ import annotations

import numpy as np
import pytest

from framework.buffers import Segments, byte_view


def test_byte_view_flattens_without_copying() -> None:
    array = np.arange(12, dtype=np.float64).reshape(3, 4)
    view = byte_view(array)
    assert (view.format, view.ndim, len(view)) == ("B", 1, array.nbytes)
    assert np.shares_memory(np.frombuffer(view, np.uint8), array)
    data = b"abc"
    assert byte_view(data).obj is data
    plain = memoryview(b"xyz")
    assert byte_view(plain) is plain


def test_byte_view_rejects_non_buffers_and_non_contiguous() -> None:
    with pytest.raises(TypeError):
        byte_view("text")
    with pytest.raises(ValueError, match="C-contiguous"):
        byte_view(np.arange(10)[::2])


def test_segments() -> None:
    source = bytearray(b"world")
    segments = Segments([b"hello ", source, np.array([33], dtype=np.uint8), b""])
    assert len(segments) == segments.nbytes == 12
    assert segments.join() == b"hello world!"
    assert [bytes(p) for p in segments] == [b"hello ", b"world", b"!", b""]
    assert repr(segments) == "Segments(parts=4, nbytes=12)"
    source[0:1] = b"W"  # parts are views: later changes show through
    assert segments.join() == b"hello World!"
    assert Segments([]).join() == b""

"""PickleSerializer: the standard C pickler first, cloudpickle where semantics need it."""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
import numpy as np
import pytest

from framework import serializers
from framework.exceptions import SerializationError
from framework.serialize import dumps, loads
from framework.serializers import PickleSerializer

MB = 1024 * 1024


class _NoCloudpickle:
    """Stands in for ``cloudpickle.Pickler`` to prove the stdlib pickler did the work."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("cloudpickle was used")


class _FailsOnce:
    """Unpicklable by the standard pickler (a lambda inside), fine for cloudpickle."""

    def __init__(self) -> None:
        self.array = np.arange(MB // 8, dtype=np.float64)  # out of band
        self.fn = lambda x: x + 1


def _local_class() -> type:
    class Local:
        def __init__(self) -> None:
            self.value = 42

    return Local


@pytest.mark.parametrize(
    "obj",
    [np.full(128, 7.0), {"a": [1, 2.5, "x"], "b": (None, True)}, np.ones(MB // 8), 12345],
)
def test_importable_objects_use_the_standard_pickler(monkeypatch, obj: Any) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    back = loads(dumps(obj, serializer=PickleSerializer()))
    if isinstance(obj, np.ndarray):
        np.testing.assert_array_equal(back, obj)
    else:
        assert back == obj


def test_lambdas_and_local_classes_fall_back_to_cloudpickle() -> None:
    fn = loads(dumps(lambda x: x * 3, serializer=PickleSerializer()))
    assert fn(2) == 6
    local = loads(dumps(_local_class()(), serializer=PickleSerializer()))
    assert local.value == 42


def test_a_failed_standard_attempt_leaves_no_partial_state() -> None:
    # The standard pickler emits the array out of band, then fails on the lambda: the
    # cloudpickle retry must start from fresh buffers (exactly one out-of-band part).
    obj = _FailsOnce()
    parts = PickleSerializer().serialize(obj)
    assert len(parts) == 2
    assert memoryview(parts[1]).nbytes == MB
    back = loads(dumps(obj, serializer=PickleSerializer()))
    np.testing.assert_array_equal(back.array, obj.array)
    assert back.fn(1) == 2


def test_main_classes_are_pickled_by_value(monkeypatch) -> None:
    main = sys.modules["__main__"]
    cls = type("FwMainOnly", (), {"__module__": "__main__", "value": 7})
    monkeypatch.setattr(main, "FwMainOnly", cls, raising=False)
    frame = dumps(cls(), serializer=PickleSerializer())
    monkeypatch.delattr(main, "FwMainOnly")
    # By reference, loading would need __main__.FwMainOnly (absent in other processes).
    back = loads(frame)
    assert type(back).__name__ == "FwMainOnly"
    assert back.value == 7


def test_pickle_by_value_modules_always_use_cloudpickle(monkeypatch) -> None:
    monkeypatch.setattr(serializers, "_PICKLE_BY_VALUE_MODULES", {"some_module"})
    calls: list[int] = []
    real = cloudpickle.Pickler

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(serializers.cloudpickle, "Pickler", counting)
    assert loads(dumps([1, 2], serializer=PickleSerializer())) == [1, 2]
    assert calls == [1]


def test_truly_unpicklable_objects_still_raise_serialization_error() -> None:
    import threading

    with pytest.raises(SerializationError, match="lock"):
        PickleSerializer().serialize(threading.Lock())


def test_text_main_in_a_large_payload_does_not_force_cloudpickle(monkeypatch) -> None:
    monkeypatch.setattr(serializers.cloudpickle, "Pickler", _NoCloudpickle)
    payload = b"__main__" * (MB // 8)  # passed to the sink by reference: not scanned
    assert loads(dumps([payload], serializer=PickleSerializer())) == [payload]

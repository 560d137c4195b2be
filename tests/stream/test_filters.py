from __future__ import annotations

import pytest

from framework.exceptions import ConfigurationError
from framework.stream import NullFilter, SamplingFilter


def test_null_filter_keeps_everything() -> None:
    assert NullFilter()({"anything": 1}) is False


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_sampling_filter_rejects_bad_probability(p: float) -> None:
    with pytest.raises(ConfigurationError, match="must be in"):
        SamplingFilter(p)
    with pytest.raises(ValueError):  # ConfigurationError is also a ValueError (seed meaning)
        SamplingFilter(p)


def test_sampling_filter_extremes_and_rate() -> None:
    assert not any(SamplingFilter(0)({}) for _ in range(200))
    assert all(SamplingFilter(1)({}) for _ in range(200))
    dropped = sum(SamplingFilter(0.5)({}) for _ in range(4000))
    assert 1600 < dropped < 2400

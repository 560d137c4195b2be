"""RepeatedFailure: one traceback per kind of failure, reminders, and the recovery."""

from __future__ import annotations

import logging

import pytest

from framework._failures import REMIND_S, RepeatedFailure
from framework.exceptions import BackendUnavailable


def test_a_failure_is_logged_in_full_once_then_reminded_then_its_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = RepeatedFailure(logging.getLogger("t"), "Reading X", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="t"):
        for _ in range(20):  # twenty turns within a second
            failures.failed(ValueError("WRONGTYPE"))
            now[0] += 0.05
        now[0] = REMIND_S + 1
        failures.failed(ValueError("WRONGTYPE"))
        failures.failed(KeyError("other"))  # a new failure: in full again
        failures.succeeded()
        failures.succeeded()  # said once
    lines = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert lines == [
        ("Reading X failed; retrying.", True),
        ("Reading X still fails (21 times so far): ValueError: WRONGTYPE", False),
        ("Reading X failed; retrying.", True),
        ("Reading X works again after 1 failures.", False),
    ]


def test_a_redis_error_is_one_line_its_traceback_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis restart logged a 40-line traceback from every process's background loop."""
    failures = RepeatedFailure(logging.getLogger("t"), "Reading X")
    with caplog.at_level(logging.DEBUG, logger="t"):
        failures.failed(BackendUnavailable("Redis at redis://h:1/0 is unreachable."))
    warning, debug = caplog.records
    assert (warning.levelno, warning.exc_info) == (logging.WARNING, None)
    assert warning.getMessage() == (
        "Reading X failed; retrying: BackendUnavailable: Redis at redis://h:1/0 is unreachable."
    )
    assert debug.levelno == logging.DEBUG
    assert debug.exc_info is not None


def test_failing_names_the_failure_while_it_lasts() -> None:
    failures = RepeatedFailure(logging.getLogger("t"), "Reading X")
    assert failures.failing is None
    failures.failed(BackendUnavailable("Redis at redis://h:1/0 is unreachable."))
    assert failures.failing == "BackendUnavailable: Redis at redis://h:1/0 is unreachable."
    failures.succeeded()
    assert failures.failing is None

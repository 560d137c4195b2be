"""RepeatedFailure: one traceback per kind of failure, reminders, and the recovery."""

from __future__ import annotations

import logging

import pytest

from framework._failures import REMIND_S, RepeatedFailure


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

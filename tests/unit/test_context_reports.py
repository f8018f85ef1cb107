"""A job's progress, heartbeat and log lines are reports: an outage drops them, never the job."""

from __future__ import annotations

import logging

import pytest

from conveyor.context import JobContext
from conveyor.store import open_store


def test_reports_that_cannot_reach_the_store_are_dropped_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = open_store("postgresql://postgres@127.0.0.1:1/nothing")  # nothing listens on port 1
    try:
        ctx = JobContext(id=7, lease="l", _store=down)
        with caplog.at_level(logging.WARNING, logger="conveyor.job"):
            ctx.progress(50, "half way")
            ctx.heartbeat()
            ctx.log("a line")
        assert [r.message for r in caplog.records].count(
            "a job's report could not be recorded; dropped") == 3
    finally:
        down.close()
    with pytest.raises(ValueError):
        ctx.progress(101)  # a wrong call is still the job's own error

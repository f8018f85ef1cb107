"""The event registry on its own: order, unknown names, unsubscribing, a hook that raises."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from conveyor.events import Event, Events
from conveyor.models import JobRecord, JobState

T0 = datetime(2030, 1, 1, tzinfo=UTC)
JOB = JobRecord(id=7, name="tasks:a", queue="default", priority=0, state=JobState.SUCCEEDED,
                args="[]", kwargs="{}", attempt=1, max_attempts=1, timeout=None, run_at=T0,
                created_at=T0)


def test_the_events_a_user_can_subscribe_to() -> None:
    assert [str(e) for e in Event] == [
        "enqueued", "started", "succeeded", "failed", "dead", "cancelled"]


def test_hooks_run_in_subscription_order_with_the_job_and_error() -> None:
    events, seen = Events(), []
    events.on("failed")(lambda job, err: seen.append(("first", job.id, err)))
    events.on(Event.FAILED)(lambda job, err: seen.append(("second", job.id, err)))
    boom = RuntimeError("boom")
    events.fire("failed", JOB, boom)
    events.fire(Event.SUCCEEDED, JOB)
    assert seen == [("first", 7, boom), ("second", 7, boom)]


def test_an_unknown_event_is_refused_naming_the_known_ones() -> None:
    events = Events()
    with pytest.raises(ValueError, match="unknown event 'finished'; expected one of enqueued"):
        events.on("finished")
    with pytest.raises(ValueError, match="unknown event"):
        events.fire("finished", JOB)


def test_a_hook_that_raises_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events, seen = Events(), []

    @events.on("dead")
    def broken_tracker(job: JobRecord, err: BaseException | None) -> None:
        raise ConnectionError("tracker down")

    events.on("dead")(lambda job, err: seen.append(job.id))
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        events.fire("dead", JOB)
    assert seen == [7]
    assert "hook broken_tracker for dead raised" in caplog.text


def test_removed_hooks_are_not_called() -> None:
    events, seen = Events(), []
    hook = events.on("started")(lambda job, err: seen.append(job.id))
    assert events.wanted("started")
    events.remove("started", hook)
    events.remove("started", hook)  # not subscribed any more: nothing happens
    events.fire("started", JOB)
    assert (seen, events.wanted("started")) == ([], False)

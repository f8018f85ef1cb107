"""Leader duties driven with explicit times, and rows a worker cannot run."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from conveyor import Conveyor, JobState
from conveyor.maintenance import Maintenance
from conveyor.models import NewJob
from conveyor.testing import TestContext, drain, isolated

app = Conveyor("sqlite:///unused-by-tests.db", retention_succeeded="1d", retention_dead="3d",
               rescue_after=30)


@app.job
def work(x: int) -> int:
    return x


@app.job
def explode() -> None:
    raise RuntimeError("boom")


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    with isolated(app, url=store_url) as ctx:
        yield ctx


def test_retention_prunes_old_succeeded_and_dead_jobs_only(t: TestContext) -> None:
    done = work.enqueue(1)
    dead = explode.enqueue()
    drain()
    waiting = work.enqueue_in(timedelta(days=30), 2)
    duties = Maintenance(app.store, app.settings, app.clock)
    assert duties.prune.run_once(t.clock.now() + timedelta(hours=23)) == 0
    assert duties.prune.run_once(t.clock.now() + timedelta(days=2)) == 1
    assert app.store.job_get(done.id) is None, "succeeded job past retention"
    assert dead.status() is JobState.DEAD, "dead jobs are kept longer"
    assert duties.prune.run_once(t.clock.now() + timedelta(days=4)) == 1
    assert app.store.job_get(dead.id) is None
    assert waiting.status() is JobState.SCHEDULED, "unfinished jobs are never pruned"


def test_promotion_makes_due_jobs_ready(t: TestContext) -> None:
    soon = work.enqueue_in(timedelta(seconds=10), 1)
    later = work.enqueue_in(timedelta(hours=1), 2)
    duties = Maintenance(app.store, app.settings, app.clock)
    assert duties.promote.run_once(t.clock.now()) == 0
    assert duties.promote.run_once(t.clock.now() + timedelta(seconds=11)) == 1
    assert (soon.status(), later.status()) == (JobState.READY, JobState.SCHEDULED)


def test_jobs_of_a_silent_worker_are_rescued(t: TestContext) -> None:
    from conveyor.models import ProcessRecord

    handle = work.enqueue(5)
    now = t.clock.now()
    app.store.process_register(ProcessRecord(
        id="w-gone", kind="worker", host="h", pid=1, started_at=now, heartbeat_at=now))
    [claimed] = app.store.job_claim("w-gone", "default", 1, now=now)
    duties = Maintenance(app.store, app.settings, app.clock)
    assert duties.rescue.run_once(now + timedelta(seconds=10)) == []
    assert duties.rescue.run_once(now + timedelta(seconds=31)) == [claimed.id]
    record = handle.record()
    assert (record.state, record.attempt) == (JobState.READY, 0), "a lost attempt is not spent"
    assert [a.outcome for a in handle.attempts()] == ["worker_lost"]
    assert "heartbeat" in (handle.attempts()[0].error_message or "")
    assert app.store.process_list() == []


def test_unknown_job_name_ends_dead_with_the_reason(t: TestContext) -> None:
    [job_id] = [i.id for i in app.store.job_insert_many([NewJob(name="nowhere.at.all:missing")])]
    drain()
    job = app.handle(job_id)
    assert job.status() is JobState.DEAD
    [attempt] = job.attempts()
    assert attempt.error_class == "UnknownJob"
    assert "importing module 'nowhere.at.all' failed" in (attempt.error_message or "")


def test_corrupted_arguments_end_dead_without_breaking_the_worker(t: TestContext) -> None:
    [bad] = [i.id for i in app.store.job_insert_many([NewJob(name=work.name, args="{not json")])]
    good = work.enqueue(3)
    drain()
    assert app.handle(bad).status() is JobState.DEAD
    assert "JSONDecodeError" in (app.handle(bad).attempts()[0].error_class or "")
    assert good.result() == 3


def test_no_rescue_right_after_the_store_came_back(t: TestContext) -> None:
    """An outage silenced every heartbeat: the leader waits rescue_after before judging them."""
    import time

    from conveyor.models import ProcessRecord

    work.enqueue(5)
    now = t.clock.now()
    app.store.process_register(ProcessRecord(
        id="w-quiet", kind="worker", host="h", pid=1, started_at=now, heartbeat_at=now))
    [claimed] = app.store.job_claim("w-quiet", "default", 1, now=now)
    duties = Maintenance(app.store, app.settings, app.clock)
    duties.rescue.hold(time.monotonic())
    assert duties.rescue.run_once(now + timedelta(seconds=31)) == [], "held: heartbeats resume"
    duties.rescue.held_until = time.monotonic() - 1  # rescue_after has passed since
    assert duties.rescue.run_once(now + timedelta(seconds=31)) == [claimed.id]


def test_history_samples_once_a_minute_and_prunes_a_week_back_hourly(t: TestContext) -> None:
    duties = Maintenance(app.store, app.settings, app.clock)
    start = t.clock.now().replace(second=0, microsecond=0) - timedelta(days=8)
    work.enqueue(1)
    assert duties.history.run_once(start)
    assert not duties.history.run_once(start + timedelta(seconds=30))
    assert len(app.store.history_list(start)) == 1
    day = start + timedelta(days=1)
    assert duties.history.run_once(day)  # the first sample is a week and a day old now...
    assert duties.history.run_once(day + timedelta(days=7))  # ...and goes with the hourly prune
    assert [s.minute for s in app.store.history_list(start)] == [day, day + timedelta(days=7)]
    assert duties.history.run_once(day + timedelta(days=7, minutes=1))  # pruned an hour ago
    assert len(app.store.history_list(start)) == 3
    assert duties.history.run_once(day + timedelta(days=7, hours=1, minutes=1))
    assert [s.minute for s in app.store.history_list(start)] == [
        day + timedelta(days=7), day + timedelta(days=7, minutes=1),
        day + timedelta(days=7, hours=1, minutes=1)]
    assert any(d.service is duties.history for d in duties.duties)

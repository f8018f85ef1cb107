"""The Python API end to end on both stores, with jobs run in-process by conveyor.testing.drain."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from conveyor import (
    Conveyor,
    InvalidState,
    JobFailed,
    JobState,
    Retry,
    WaitTimeout,
    current_job,
)
from conveyor.testing import TestContext, drain, isolated

app = Conveyor("sqlite:///unused-by-tests.db")
seen: list[object] = []


@app.job(queue="mailers", priority=3, timeout=60)
def send_email(user_id: int, *, subject: str = "hi") -> str:
    return f"{user_id}:{subject}"


@app.job
def echo(value: object) -> object:
    seen.append(value)
    return value


@app.job
async def async_echo(value: object) -> object:
    return value


@app.job(retry=Retry(attempts=3, backoff="fixed", base=60))
def always_fails() -> None:
    raise RuntimeError("nope")


@app.job
def reports() -> str:
    job = current_job()
    job.progress(50, "half way")
    job.log(f"running attempt {job.attempt}")
    job.heartbeat()
    return "done"


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    seen.clear()
    with isolated(app, url=store_url) as ctx:
        yield ctx


def test_enqueue_returns_a_ready_handle_with_the_decorators_options(t: TestContext) -> None:
    handle = send_email.enqueue(42, subject="welcome")
    job = handle.record()
    assert handle.status() is JobState.READY and isinstance(handle.status(), str)
    assert (job.name, job.queue, job.priority, job.timeout) == (
        f"{__name__}:send_email", "mailers", 3, 60)
    drain()
    assert handle.result() == "42:welcome"


def test_options_override_the_decorator(t: TestContext) -> None:
    job = send_email.options(queue="critical", priority=10).enqueue(1).record()
    assert (job.queue, job.priority) == ("critical", 10)


def test_tagged_types_reach_the_job_and_come_back(t: TestContext) -> None:
    value = {"at": datetime(2026, 5, 1, 12, tzinfo=UTC), "d": date(2026, 5, 1),
             "id": UUID(int=7), "amount": Decimal("1.10")}
    handle = echo.enqueue(value)
    drain()
    assert seen == [value]
    assert handle.result() == value


def test_async_jobs_run_and_return(t: TestContext) -> None:
    handle = async_echo.enqueue([1, 2])
    drain()
    assert handle.result() == [1, 2]


def test_bad_arguments_fail_at_enqueue_and_store_nothing(t: TestContext) -> None:
    with pytest.raises(TypeError, match="cannot encode"):
        echo.enqueue(object())
    with pytest.raises(TypeError, match="send_email"):
        send_email.enqueue(1, 2, 3)
    assert t.enqueued() == []


def test_plain_call_runs_inline(t: TestContext) -> None:
    assert send_email(5, subject="now") == "5:now"
    assert t.enqueued() == []


def test_enqueue_many_keeps_order_in_one_call(t: TestContext) -> None:
    handles = app.enqueue_many([echo.prepare(i) for i in range(50)])
    assert [h.id for h in handles] == sorted(h.id for h in handles)
    drain()
    assert [h.result() for h in handles] == list(range(50))
    assert seen == list(range(50))


def test_scheduled_jobs_wait_for_their_time(t: TestContext) -> None:
    later = echo.enqueue_in(timedelta(hours=1), "later")
    at = echo.enqueue_at(t.clock.now() + timedelta(minutes=5), "at")
    assert later.status() is JobState.SCHEDULED and at.status() is JobState.SCHEDULED
    drain()
    assert seen == []
    t.advance(timedelta(minutes=6))
    drain()
    assert seen == ["at"]
    t.advance(timedelta(hours=1))
    drain()
    assert later.status() is JobState.SUCCEEDED
    with pytest.raises(ValueError, match="aware"):
        echo.enqueue_at(datetime(2030, 1, 1), "naive")


def test_dead_job_keeps_every_attempt_and_can_be_retried(t: TestContext) -> None:
    handle = always_fails.enqueue()
    result = drain()
    assert (result.failed, result.dead) == (2, 1)
    assert handle.status() is JobState.DEAD
    attempts = handle.attempts()
    assert [(a.attempt, a.outcome, a.error_class) for a in attempts] == [
        (1, "error", "RuntimeError"), (2, "error", "RuntimeError"), (3, "error", "RuntimeError")]
    assert all("raise RuntimeError" in (a.traceback or "") for a in attempts)
    with pytest.raises(JobFailed, match="dead"):
        handle.result()
    assert app.jobs.retry([handle.id]) == 1
    assert handle.status() is JobState.READY
    drain()
    assert handle.status() is JobState.DEAD and len(handle.attempts()) == 4


def test_bulk_retry_and_discard_of_dead_jobs(t: TestContext) -> None:
    handles = [always_fails.enqueue() for _ in range(3)]
    drain()
    assert app.jobs.retry_all() == 3
    drain()
    assert app.jobs.discard_all() == 3
    assert app.jobs.list(state="dead") == []
    assert handles[0].attempts() == []


def test_cancel_a_waiting_job(t: TestContext) -> None:
    handle = echo.enqueue("x")
    assert handle.cancel() is JobState.CANCELLED
    drain()
    assert seen == []
    with pytest.raises(JobFailed):
        handle.result()


def test_wait_and_result_before_the_job_finished(t: TestContext) -> None:
    handle = echo.enqueue("x")
    with pytest.raises(InvalidState):
        handle.result()
    with pytest.raises(WaitTimeout):
        handle.wait(timeout=0.05)


def test_current_job_reports_progress_and_logs(t: TestContext) -> None:
    handle = reports.enqueue()
    drain()
    job = handle.record()
    assert (job.progress, job.progress_message) == (50.0, "half way")
    assert [entry.message for entry in handle.logs()] == ["running attempt 1"]
    assert reports() == "done", "outside a worker, current_job() is inert"


def test_listing_filters(t: TestContext) -> None:
    send_email.enqueue(1)
    echo.enqueue(2)
    assert [j.name for j in app.jobs.list(queue="mailers")] == [send_email.name]
    assert [j.name for j in app.jobs.list(name=echo.name)] == [echo.name]
    assert len(app.jobs.list(state="ready")) == 2


def test_hooks_see_success_and_death(t: TestContext) -> None:
    events: list[tuple[str, str, str | None]] = []
    ok = app.on("succeeded")(lambda job, err: events.append(("succeeded", job.name, None)))
    died = app.on("dead")(lambda job, err: events.append(("dead", job.name, type(err).__name__)))
    try:
        echo.enqueue(1)
        always_fails.enqueue()
        drain()
    finally:
        app.events.remove("succeeded", ok)
        app.events.remove("dead", died)
    assert ("succeeded", echo.name, None) in events
    assert ("dead", always_fails.name, "RuntimeError") in events


def test_transactional_enqueue_on_a_shared_sqlite_file(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with isolated(app, url=url) as ctx:
        conn = sqlite3.connect(f"{tmp_path}/shared.db", isolation_level=None)
        conn.execute("BEGIN")
        echo.enqueue("rolled back", connection=conn)
        conn.execute("ROLLBACK")
        assert ctx.enqueued() == []
        conn.execute("BEGIN")
        handle = echo.enqueue("kept", connection=conn)
        conn.execute("COMMIT")
        assert handle.status() is JobState.READY
        # outside any transaction, the enqueue commits on its own and the handle is right
        auto = echo.enqueue("autocommit", connection=conn)
        assert not conn.in_transaction and auto.record().args == '["autocommit"]'
        conn.close()

"""Unique jobs through the Python API on both stores: keys by arguments or by function, skip or
raise on a duplicate, released at start or at the end, kept for a period, inside enqueue_many,
a caller's transaction, scheduled jobs and retries, and under 8 processes enqueueing at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from conveyor import Conveyor, DuplicateJob, JobState
from conveyor.models import AttemptOutcome, JobOutcome
from conveyor.store import open_store
from conveyor.testing import TestContext, isolated

app = Conveyor("sqlite:///unused-by-tests.db")


@app.job(unique=True)
def sync(user_id: int, full: bool = False) -> int:
    return user_id


@app.job(unique=lambda user_id, **_: f"sync:{user_id}", on_conflict="raise")
def sync_strict(user_id: int, note: str = "") -> int:
    return user_id


@app.job(unique=True, unique_until="started")
def refresh(user_id: int) -> int:
    return user_id


@app.job(unique=True, retry=3)
def flaky(user_id: int) -> int:
    raise RuntimeError("not yet")


@app.job
def plain(n: int) -> int:
    return n


@pytest.fixture
def t(store_url: str) -> Iterator[TestContext]:
    with isolated(app, url=store_url) as ctx:
        yield ctx


def test_the_same_call_returns_the_existing_job(t: TestContext) -> None:
    first = sync.enqueue(1)
    assert sync.enqueue(1) == first
    assert sync.enqueue(user_id=1, full=False) == first  # however the arguments were passed
    assert sync.enqueue(1, full=True) != first
    assert sync.enqueue(2) != first
    assert len(t.enqueued(sync)) == 3


def test_raise_carries_the_existing_id(t: TestContext) -> None:
    first = sync_strict.enqueue(7)
    with pytest.raises(DuplicateJob) as caught:
        sync_strict.enqueue(7, note="other arguments, same key")
    assert caught.value.existing_id == first.id
    assert [j.id for j in t.enqueued()] == [first.id]


def test_finished_keeps_the_key_until_the_job_ends(t: TestContext) -> None:
    first = sync.enqueue(1)
    t.drain()
    assert first.status() is JobState.SUCCEEDED
    assert sync.enqueue(1) != first


def test_started_gives_the_key_up_once_the_job_starts(t: TestContext) -> None:
    first = refresh.enqueue(1)
    assert refresh.enqueue(1) == first
    t.store.job_claim("w", "default", 1, now=app.client.now())
    second = refresh.enqueue(1)
    assert second != first and refresh.enqueue(1) == second


def test_a_job_waiting_to_retry_keeps_its_key(t: TestContext) -> None:
    first = flaky.enqueue(1)
    [job] = t.store.job_claim("w", "default", 1, now=app.client.now())
    assert job.started_at is not None and t.clock is not None
    t.store.job_finish_many([JobOutcome(
        job_id=job.id, lease=job.lease or "", attempt=1, worker_id="w",
        started_at=job.started_at, state=JobState.FAILED, outcome=AttemptOutcome.ERROR,
        error_class="RuntimeError", retry_at=t.clock.now() + timedelta(minutes=1),
    )], now=app.client.now())
    assert first.status() is JobState.FAILED
    assert flaky.enqueue(1) == first


def test_unique_for_blocks_after_the_job_finished(t: TestContext) -> None:
    hourly = sync.options(unique_for=timedelta(hours=1))
    first = hourly.enqueue(5)
    t.drain()
    assert hourly.enqueue(5) == first
    t.advance(timedelta(minutes=61))
    assert hourly.enqueue(5) != first


def test_scheduled_jobs_hold_their_key(t: TestContext) -> None:
    first = sync.enqueue_in(timedelta(hours=1), 3)
    assert first.status() is JobState.SCHEDULED
    assert sync.enqueue(3) == first


def test_enqueue_many_creates_each_key_once(t: TestContext) -> None:
    handles = app.enqueue_many([sync.prepare(i % 3) for i in range(9)] + [plain.prepare(1)])
    assert len({h.id for h in handles}) == 4
    assert [h.id for h in handles[3:9]] == [handles[i % 3].id for i in range(3, 9)]


def test_options_turn_uniqueness_on_and_off_per_enqueue(t: TestContext) -> None:
    assert plain.options(unique=True).enqueue(1) == plain.options(unique=True).enqueue(1)
    assert sync.options(unique=False).enqueue(1) != sync.options(unique=False).enqueue(1)
    with pytest.raises(DuplicateJob):
        plain.options(unique="k", on_conflict="raise").enqueue(1)
        plain.options(unique="k", on_conflict="raise").enqueue(2)


def test_bad_options_are_refused_at_definition(t: TestContext) -> None:
    with pytest.raises(ValueError, match="unique_until"):
        plain.options(unique=True, unique_until="never")
    with pytest.raises(ValueError, match="on_conflict"):
        plain.options(unique=True, on_conflict="replace")
    with pytest.raises(ValueError, match="need unique="):
        plain.options(unique_until="started")


def test_inside_a_callers_transaction(t: TestContext, store_url: str) -> None:
    first = sync.enqueue(9)
    if store_url.startswith("sqlite"):
        conn: sqlite3.Connection | psycopg.Connection = sqlite3.connect(t.store.path)  # type: ignore[attr-defined]
    else:
        conn = psycopg.connect(store_url)
    try:
        assert sync.enqueue(9, connection=conn) == first
        created = sync.enqueue(10, connection=conn)
        conn.rollback()
    finally:
        conn.close()
    assert created.id not in [j.id for j in t.enqueued()]


def _enqueue_many_times(url: str, n: int, start_at: float) -> set[int]:
    app.use_store(open_store(url))  # this process's own connections
    time.sleep(max(0.0, start_at - time.time()))
    return {sync.enqueue(42).id for _ in range(n)}


def test_eight_processes_enqueueing_the_same_job_create_exactly_one(
    t: TestContext, store_url: str
) -> None:
    start_at = time.time() + 1.0  # all at once, after every process has started
    with multiprocessing.get_context("fork").Pool(8) as pool:
        pending = [pool.apply_async(_enqueue_many_times, (store_url, 1000, start_at))
                   for _ in range(8)]
        seen = set().union(*(p.get(timeout=300) for p in pending))
    assert len(seen) == 1
    assert len(t.enqueued(sync)) == 1


def test_cancelling_a_job_gives_its_key_up(t: TestContext) -> None:
    first = sync.enqueue(11)
    first.cancel()
    assert sync.enqueue(11) != first

"""The Store contract: every test runs on SQLite and PostgreSQL through the ``store`` fixture.

Times are frozen at ``T0`` (whole seconds, exact in SQLite's float columns) unless a test is
about the store's own clock. Backend-specific behaviour lives in test_postgres.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from conveyor.errors import ConfigurationError, SchemaError
from conveyor.models import (
    SUSPECT_AT,
    AttemptOutcome,
    Held,
    HeldJob,
    Inserted,
    JobFilter,
    JobOutcome,
    JobRecord,
    JobState,
    NewJob,
    ProcessRecord,
)
from conveyor.store import SCHEMA_VERSION, Store, open_store
from conveyor.store.sqlite import sqlite_path

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def ids(inserted: list[Inserted]) -> list[int]:
    """The ids of jobs that had to be created."""
    assert all(i.created for i in inserted), inserted
    return [i.id for i in inserted]


def insert(store: Store, *jobs: NewJob, now: datetime | None = T0) -> list[int]:
    return ids(store.job_insert_many(list(jobs) or [NewJob("job")], now=now))


def claim_one(store: Store, worker: str = "w1", queue: str = "default",
              now: datetime | None = T0) -> JobRecord:
    jobs = store.job_claim(worker, queue, 1, now=now)
    assert len(jobs) == 1
    return jobs[0]


def outcome(job: JobRecord, state: JobState, how: AttemptOutcome, **kw: object) -> JobOutcome:
    assert job.lease is not None and job.started_at is not None
    fields: dict[str, object] = dict(
        job_id=job.id, lease=job.lease, attempt=job.attempt, worker_id=job.worker_id or "w1",
        started_at=job.started_at, state=state, outcome=how,
    )
    fields.update(kw)
    return JobOutcome(**fields)  # type: ignore[arg-type]


def get(store: Store, job_id: int) -> JobRecord:
    job = store.job_get(job_id)
    assert job is not None
    return job


def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# --- insert, get, list ---------------------------------------------------------------------
ODD_TEXT = ["tab\there", "back\\slash", "new\nline\r", "\\N", "ünïcode ✓", ""]


@pytest.mark.parametrize("n", [40, 100])  # 100: PostgreSQL writes it with COPY
def test_insert_returns_ids_in_input_order_and_round_trips_fields(store: Store, n: int) -> None:
    later = T0 + timedelta(hours=1)
    jobs = [
        NewJob(f"mod:job{i}{ODD_TEXT[i % 6] if i % 5 == 0 else ''}", args=f"[{i}]",
               kwargs=json.dumps({"i": i, "s": ODD_TEXT[i % 6]}), queue=f"q{i % 3}",
               priority=(i * 7) % 5, max_attempts=i + 1, timeout=None if i % 2 else i + 0.5,
               unique_key=f"u{i}{ODD_TEXT[i % 6]}" if i % 4 == 0 else None,
               concurrency_key=f"c{i}" if i else None, run_at=later if i % 10 == 3 else None)
        for i in range(n)
    ]
    ids = insert(store, *jobs)
    assert len(ids) == n and ids == sorted(ids) and len(set(ids)) == n
    for job_id, new in zip(ids, jobs, strict=True):
        got = get(store, job_id)
        assert (got.name, got.args, got.kwargs, got.queue, got.priority, got.max_attempts,
                got.timeout, got.unique_key, got.concurrency_key) == (
            new.name, new.args, new.kwargs, new.queue, new.priority, new.max_attempts,
            new.timeout, new.unique_key, new.concurrency_key)
        state, run_at = (JobState.READY, T0) if new.run_at is None else (JobState.SCHEDULED, later)
        assert (got.state, got.attempt, got.run_at, got.created_at) == (state, 0, run_at, T0)
        assert got.lease is None and got.worker_id is None and got.started_at is None
        assert got.run_at.utcoffset() == timedelta(0)


def test_insert_of_nothing_returns_nothing(store: Store) -> None:
    assert store.job_insert_many([], now=T0) == []
    assert store.job_list(JobFilter()) == []


def test_run_at_in_the_future_is_scheduled_in_the_past_ready(store: Store) -> None:
    later, earlier = insert(store, NewJob("a", run_at=at(60)), NewJob("b", run_at=at(-60)))
    assert (get(store, later).state, get(store, later).run_at) == (JobState.SCHEDULED, at(60))
    assert (get(store, earlier).state, get(store, earlier).run_at) == (JobState.READY, at(-60))


def test_without_now_the_store_clock_is_used(store: Store) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    (job_id,) = insert(store, NewJob("a"), now=None)
    job = get(store, job_id)
    assert before < job.created_at < datetime.now(UTC) + timedelta(seconds=5)
    assert job.run_at == job.created_at and job.state == JobState.READY


def test_get_unknown_job_is_none(store: Store) -> None:
    assert store.job_get(12345) is None


def test_list_is_newest_first_with_filters_and_paging(store: Store) -> None:
    ids = insert(store, *[NewJob(f"n{i % 2}", queue=f"q{i % 3}") for i in range(9)])
    assert [j.id for j in store.job_list(JobFilter())] == ids[::-1]
    assert [j.id for j in store.job_list(JobFilter(limit=3))] == ids[:-4:-1]
    assert [j.id for j in store.job_list(JobFilter(before_id=ids[3]))] == ids[2::-1]
    assert [j.id for j in store.job_list(JobFilter(queue="q1"))] == [ids[7], ids[4], ids[1]]
    assert [j.id for j in store.job_list(JobFilter(name="n1", queue="q1"))] == [ids[7], ids[1]]
    assert [j.id for j in store.job_list(JobFilter(ids=(ids[0], ids[5])))] == [ids[5], ids[0]]
    claim_one(store, queue="q0")
    running = store.job_list(JobFilter(states=(JobState.RUNNING,)))
    assert [j.id for j in running] == [ids[0]]
    both = store.job_list(JobFilter(states=(JobState.RUNNING, JobState.READY), queue="q0"))
    assert [j.id for j in both] == [ids[6], ids[3], ids[0]]


def test_ids_by_state_with_and_without_queue(store: Store) -> None:
    a, b, c = insert(store, NewJob("a"), NewJob("b", queue="other"), NewJob("c", run_at=at(9)))
    assert sorted(store.job_ids_by_state(JobState.READY)) == [a, b]
    assert store.job_ids_by_state(JobState.READY, queue="other") == [b]
    assert store.job_ids_by_state(JobState.SCHEDULED) == [c]
    assert store.job_ids_by_state(JobState.DEAD) == []


# --- claim ---------------------------------------------------------------------------------
def test_claim_takes_highest_priority_first_then_oldest(store: Store) -> None:
    ids = insert(store, *[NewJob(f"p{p}", priority=p) for p in (0, 5, 1, 5, 0, 9)])
    claimed = store.job_claim("w1", "default", 10, now=at(1))
    assert [j.id for j in claimed] == [ids[5], ids[1], ids[3], ids[2], ids[0], ids[4]]


def test_claim_respects_limit_and_queue_and_marks_running(store: Store) -> None:
    ids = insert(store, *[NewJob("a") for _ in range(5)], NewJob("elsewhere", queue="other"))
    claimed = store.job_claim("w1", "default", 2, now=at(3))
    assert [j.id for j in claimed] == ids[:2]
    for job in claimed:
        assert job.state == JobState.RUNNING and job.attempt == 1 and job.worker_id == "w1"
        assert job.started_at == at(3) and job.heartbeat_at == at(3)
        assert job.lease and job.lease == claimed[0].lease
        assert get(store, job.id) == job
    assert len(store.job_claim("w1", "default", 10, now=at(3))) == 3
    assert store.job_claim("w1", "default", 10, now=at(3)) == []
    assert get(store, ids[5]).state == JobState.READY


def test_each_claim_gets_a_fresh_lease(store: Store) -> None:
    insert(store, NewJob("a"), NewJob("b"))
    assert claim_one(store).lease != claim_one(store).lease


def test_claim_skips_a_paused_queue_until_resumed(store: Store) -> None:
    (job_id,) = insert(store, NewJob("a", queue="mail"))
    store.queue_pause("mail")
    assert store.job_claim("w1", "mail", 5, now=T0) == []
    assert get(store, job_id).state == JobState.READY
    store.queue_resume("mail")
    assert [j.id for j in store.job_claim("w1", "mail", 5, now=T0)] == [job_id]


def test_concurrent_claimers_never_get_the_same_job(store: Store) -> None:
    ids = insert(store, *[NewJob(f"j{i}") for i in range(120)])
    got: dict[int, list[int]] = {}

    def work(n: int) -> None:
        mine = open_store(store.url)
        try:
            while batch := mine.job_claim(f"w{n}", "default", 3):
                got.setdefault(n, []).extend(j.id for j in batch)
        finally:
            mine.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [job_id for batch in got.values() for job_id in batch]
    assert sorted(claimed) == ids  # everything once, nothing twice
    assert store.job_ids_by_state(JobState.READY) == []


# --- finish --------------------------------------------------------------------------------
def test_finish_success_records_result_and_attempt(store: Store) -> None:
    insert(store)
    job = claim_one(store)
    done = outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED, result='"ok"')
    assert store.job_finish_many([done], now=at(5)) == [True]
    after = get(store, job.id)
    assert (after.state, after.result, after.error, after.finished_at) == (
        JobState.SUCCEEDED, '"ok"', None, at(5))
    assert after.lease is None and after.heartbeat_at is None and after.attempt == 1
    (attempt,) = store.job_attempts(job.id)
    assert (attempt.attempt, attempt.worker_id, attempt.started_at, attempt.finished_at,
            attempt.outcome) == (1, "w1", T0, at(5), AttemptOutcome.SUCCEEDED)


def test_finish_failed_waits_for_retry_at(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=3))
    job = claim_one(store)
    failed = outcome(job, JobState.FAILED, AttemptOutcome.ERROR, error_class="KeyError",
                     error_message="'x'", traceback="Traceback...", retry_at=at(30),
                     finished_at=at(2))
    assert store.job_finish_many([failed], now=at(9)) == [True]
    after = get(store, job.id)
    assert (after.state, after.run_at, after.finished_at, after.error) == (
        JobState.FAILED, at(30), None, "KeyError: 'x'")
    (attempt,) = store.job_attempts(job.id)
    assert (attempt.outcome, attempt.error_class, attempt.error_message, attempt.traceback,
            attempt.finished_at) == (AttemptOutcome.ERROR, "KeyError", "'x'", "Traceback...",
                                     at(2))
    assert store.jobs_promote(now=at(29)) == 0
    assert store.jobs_promote(now=at(30)) == 1
    assert claim_one(store, now=at(31)).attempt == 2


def test_finish_dead_and_cancelled_are_final(store: Store) -> None:
    insert(store, NewJob("a"), NewJob("b"))
    first, second = claim_one(store), claim_one(store)
    assert store.job_finish_many([
        outcome(first, JobState.DEAD, AttemptOutcome.TIMEOUT, error_class="JobTimeout"),
        outcome(second, JobState.CANCELLED, AttemptOutcome.CANCELLED),
    ], now=at(4)) == [True, True]
    assert (get(store, first.id).state, get(store, first.id).error) == (JobState.DEAD, "JobTimeout")
    assert get(store, first.id).finished_at == at(4)
    assert get(store, second.id).state == JobState.CANCELLED
    assert [a.outcome for a in store.job_attempts(first.id)] == [AttemptOutcome.TIMEOUT]


def test_finish_with_a_wrong_lease_is_rejected_and_changes_nothing(store: Store) -> None:
    insert(store, NewJob("a"), NewJob("b"))
    good, other = claim_one(store), claim_one(store)
    forged = JobOutcome(job_id=other.id, lease="not-the-lease", attempt=1, worker_id="w9",
                        started_at=T0, state=JobState.SUCCEEDED, outcome=AttemptOutcome.SUCCEEDED)
    before = get(store, other.id)
    accepted = store.job_finish_many(
        [forged, outcome(good, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)], now=at(1)
    )
    assert accepted == [False, True]
    assert get(store, other.id) == before
    assert store.job_attempts(other.id) == []
    # the same outcome twice: only the first lands
    again = outcome(other, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)
    assert store.job_finish_many([again, again], now=at(2)) == [True, False]
    assert len(store.job_attempts(other.id)) == 1
    assert store.job_finish_many([], now=at(3)) == []


def test_a_rescued_job_rejects_its_old_lease(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=5))
    stale = claim_one(store, worker="w1")
    assert store.jobs_rescue(["w1"], "heartbeat stale", now=at(60)) == [stale.id]
    late = outcome(stale, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED, result="1")
    assert store.job_finish_many([late], now=at(61)) == [False]
    assert get(store, stale.id).state == JobState.READY
    fresh = claim_one(store, worker="w2", now=at(62))
    assert store.job_finish_many([late], now=at(63)) == [False]
    assert not store.job_progress(stale.id, stale.lease or "", 50.0, "late", now=at(63))
    assert store.job_finish_many(
        [outcome(fresh, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)], now=at(64)) == [True]
    assert [a.outcome for a in store.job_attempts(stale.id)] == [
        AttemptOutcome.WORKER_LOST, AttemptOutcome.SUCCEEDED]


# --- release, progress, logs ---------------------------------------------------------------
def test_release_returns_job_to_ready_without_spending_the_attempt(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=2))
    job = claim_one(store)
    assert store.job_release([(job.id, "wrong")], now=at(1)) == 0
    assert store.job_release([(job.id, job.lease or "")], now=at(2)) == 1
    after = get(store, job.id)
    assert (after.state, after.attempt, after.lease, after.run_at, after.finished_at) == (
        JobState.READY, 0, None, at(2), None)
    (attempt,) = store.job_attempts(job.id)
    assert (attempt.attempt, attempt.outcome, attempt.worker_id, attempt.finished_at) == (
        1, AttemptOutcome.SHUTDOWN, "w1", at(2))
    assert store.job_release([(job.id, job.lease or "")], now=at(3)) == 0
    assert claim_one(store, now=at(4)).attempt == 1


def test_release_of_a_job_whose_cancel_was_requested_cancels_it(store: Store) -> None:
    insert(store)
    job = claim_one(store)
    assert store.job_cancel(job.id, now=at(1)) == JobState.RUNNING
    assert store.job_release([(job.id, job.lease or "")], now=at(2)) == 1
    after = get(store, job.id)
    assert (after.state, after.finished_at) == (JobState.CANCELLED, at(2))


def test_finish_and_claim_records_outcomes_and_claims_in_one_call(store: Store) -> None:
    done_id, stale_id, next_id, later_id = insert(store, NewJob("a"), NewJob("b"), NewJob("c"),
                                                  NewJob("d"))
    first, second = store.job_claim("w1", "default", 2, now=at(1))
    good = outcome(first, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED, result="1")
    stale = replace(outcome(second, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED), lease="old")
    accepted, claimed = store.job_finish_and_claim([good, stale], "w1", "default", 1, now=at(2))
    assert accepted == [True, False]
    assert [j.id for j in claimed] == [next_id] and claimed[0].state is JobState.RUNNING
    assert get(store, done_id).state is JobState.SUCCEEDED
    assert get(store, stale_id).state is JobState.RUNNING, "a stale lease changes nothing"
    assert [a.outcome for a in store.job_attempts(done_id)] == [AttemptOutcome.SUCCEEDED]
    accepted, claimed = store.job_finish_and_claim([], "w1", "nowhere", 5, now=at(3))
    assert (accepted, claimed) == ([], [])
    assert get(store, later_id).state is JobState.READY


def test_release_records_the_reason_given(store: Store) -> None:
    insert(store)
    job = claim_one(store)
    assert store.job_release([(job.id, job.lease or "")], reason="replaced", now=at(1)) == 1
    [attempt] = store.job_attempts(job.id)
    assert (attempt.outcome, attempt.error_message) == (AttemptOutcome.SHUTDOWN, "replaced")


def test_overdue_finds_jobs_past_timeout_or_cancel_grace_of_given_workers(store: Store) -> None:
    timed, free, cancelled, elsewhere = insert(
        store, NewJob("timed", timeout=10), NewJob("free"), NewJob("cancelled"),
        NewJob("elsewhere", timeout=1),
    )
    for worker in ("w1", "w1", "w1", "w2"):
        claim_one(store, worker=worker)
    store.job_cancel(cancelled, now=at(5))

    def overdue(seconds: float) -> list[int]:
        found = store.jobs_overdue(["w1"], grace=1, cancel_grace=3, now=at(seconds))
        return [j.id for j in found]

    assert overdue(8) == []
    assert overdue(9) == [cancelled], "cancel asked at 5s, grace 3s"
    assert overdue(11.5) == [timed, cancelled], "timeout 10s plus 1s grace"
    assert free not in overdue(10_000) and elsewhere not in overdue(10_000)
    assert store.jobs_overdue([], grace=0, cancel_grace=0) == []


def test_progress_and_heartbeat_are_fenced_by_the_lease(store: Store) -> None:
    insert(store)
    job = claim_one(store)
    assert store.job_progress(job.id, job.lease or "", 40.0, "halfway", now=at(1))
    assert store.job_progress(job.id, job.lease or "", None, None, now=at(2))
    after = get(store, job.id)
    assert (after.progress, after.progress_message, after.heartbeat_at) == (40.0, "halfway", at(2))
    assert not store.job_progress(job.id, "stale", 90.0, "no", now=at(3))
    assert get(store, job.id).progress == 40.0


def test_logs_are_kept_in_order(store: Store) -> None:
    (job_id,) = insert(store)
    store.job_log(job_id, 1, "first", now=at(1))
    store.job_log(job_id, 1, "second", now=at(2))
    logs = store.job_logs(job_id)
    assert [(log.job_id, log.attempt, log.at, log.message) for log in logs] == [
        (job_id, 1, at(1), "first"), (job_id, 1, at(2), "second")]
    assert store.job_logs(job_id + 1) == []


# --- cancel, retry, discard ----------------------------------------------------------------
def test_cancel_a_waiting_job_at_once(store: Store) -> None:
    ready, scheduled = insert(store, NewJob("a"), NewJob("b", run_at=at(100)))
    assert store.job_cancel(ready, now=at(1)) == JobState.CANCELLED
    assert store.job_cancel(scheduled, now=at(1)) == JobState.CANCELLED
    assert get(store, ready).finished_at == at(1)
    assert store.job_cancel(999_999, now=at(1)) is None


def test_cancel_a_running_job_only_flags_it(store: Store) -> None:
    insert(store)
    job = claim_one(store)
    assert store.job_cancel(job.id, now=at(1)) == JobState.RUNNING
    assert get(store, job.id).cancel_requested
    done = outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)
    assert store.job_finish_many([done], now=at(2)) == [True]
    assert store.job_cancel(job.id, now=at(3)) == JobState.SUCCEEDED


def test_retry_a_dead_job_allows_one_more_attempt(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=1))
    job = claim_one(store)
    dead = outcome(job, JobState.DEAD, AttemptOutcome.ERROR, error_class="E")
    store.job_finish_many([dead], now=at(1))
    assert store.job_retry([job.id], now=at(2)) == 1
    after = get(store, job.id)
    assert (after.state, after.max_attempts, after.run_at, after.finished_at) == (
        JobState.READY, 2, at(2), None)
    assert claim_one(store, now=at(3)).attempt == 2
    assert store.job_retry([job.id], now=at(4)) == 0  # running: nothing to retry
    assert store.job_retry([], now=at(4)) == 0


def test_retry_of_cancelled_and_failed_jobs(store: Store) -> None:
    cancelled, failing = insert(store, NewJob("a"), NewJob("b", max_attempts=3))
    store.job_cancel(cancelled, now=at(1))
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.FAILED, AttemptOutcome.ERROR, error_class="E",
                                   retry_at=at(500))], now=at(1))
    assert store.job_retry([cancelled, failing], now=at(2)) == 2
    assert {get(store, i).state for i in (cancelled, failing)} == {JobState.READY}
    assert get(store, failing).max_attempts == 3 and get(store, failing).run_at == at(2)


def test_discard_deletes_job_attempts_and_logs_but_never_a_running_job(store: Store) -> None:
    insert(store, NewJob("a"), NewJob("b"))
    dead, running = claim_one(store), claim_one(store)
    store.job_finish_many([outcome(dead, JobState.DEAD, AttemptOutcome.ERROR)], now=at(1))
    store.job_log(dead.id, 1, "bye", now=at(1))
    assert store.job_discard([dead.id, running.id, 424242]) == 1
    assert store.job_get(dead.id) is None
    assert store.job_attempts(dead.id) == [] and store.job_logs(dead.id) == []
    assert get(store, running.id).state == JobState.RUNNING
    assert store.job_discard([]) == 0


# --- time-driven duties --------------------------------------------------------------------
def test_promote_makes_due_jobs_ready(store: Store) -> None:
    soon, later = insert(store, NewJob("a", run_at=at(10)), NewJob("b", run_at=at(20)))
    assert store.jobs_promote(now=at(9)) == 0
    assert store.jobs_promote(now=at(10)) == 1
    assert (get(store, soon).state, get(store, later).state) == (JobState.READY, JobState.SCHEDULED)
    assert get(store, soon).run_at == at(10)
    assert store.jobs_promote(now=at(100), limit=0) == 0
    assert store.jobs_promote(now=at(100)) == 1


def test_promote_with_include_retries_ignores_retry_time(store: Store) -> None:
    scheduled, _ = insert(store, NewJob("a", run_at=at(1000)), NewJob("b", max_attempts=2))
    job = claim_one(store)
    store.job_finish_many([outcome(job, JobState.FAILED, AttemptOutcome.ERROR,
                                   retry_at=at(600))], now=at(1))
    assert store.jobs_promote(now=at(2)) == 0
    assert store.jobs_promote(now=at(2), include_retries=True) == 1
    assert (get(store, job.id).state, get(store, job.id).run_at) == (JobState.READY, at(2))
    assert get(store, scheduled).state == JobState.SCHEDULED


def test_promote_without_now_uses_the_store_clock(store: Store) -> None:
    wall = datetime.now(UTC)
    past = wall - timedelta(hours=1)
    due, not_due = ids(store.job_insert_many(
        [NewJob("a", run_at=wall - timedelta(minutes=1)), NewJob("b", run_at=wall + timedelta(hours=1))],
        now=past,
    ))
    assert get(store, due).state == JobState.SCHEDULED
    assert store.jobs_promote() == 1
    assert (get(store, due).state, get(store, not_due).state) == (JobState.READY, JobState.SCHEDULED)


def test_prune_deletes_old_finished_jobs_by_age(store: Store) -> None:
    insert(store, *[NewJob(f"j{i}") for i in range(4)])
    jobs = store.job_claim("w1", "default", 4, now=T0)
    states = [JobState.SUCCEEDED, JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED]
    store.job_finish_many([
        outcome(j, s, AttemptOutcome.SUCCEEDED, finished_at=at(10 * i))
        for i, (j, s) in enumerate(zip(jobs, states, strict=True))
    ])
    store.job_log(jobs[0].id, 1, "old", now=at(0))
    (waiting,) = insert(store, NewJob("waiting"))
    assert store.jobs_prune(succeeded_before=at(5), dead_before=at(25)) == 2
    assert [store.job_get(j.id) is None for j in jobs] == [True, False, True, False]
    assert store.job_attempts(jobs[0].id) == [] and store.job_logs(jobs[0].id) == []
    assert store.jobs_prune(succeeded_before=at(1000), dead_before=at(1000)) == 2
    assert [j.id for j in store.job_list(JobFilter())] == [waiting]


def test_rescue_makes_lost_jobs_ready_without_spending_an_attempt(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=3), NewJob("b", max_attempts=3))
    lost, alive = claim_one(store, worker="dead-worker"), claim_one(store, worker="live")
    assert store.jobs_rescue(["dead-worker", "nobody"], "heartbeat stale", now=at(90)) == [lost.id]
    after = get(store, lost.id)
    assert (after.state, after.attempt, after.lost_count, after.lease, after.run_at) == (
        JobState.READY, 0, 1, None, at(90))
    assert after.error == "WorkerLost: heartbeat stale" and after.finished_at is None
    (attempt,) = store.job_attempts(lost.id)
    assert (attempt.attempt, attempt.outcome, attempt.error_class, attempt.error_message,
            attempt.worker_id, attempt.started_at, attempt.finished_at) == (
        1, AttemptOutcome.WORKER_LOST, "WorkerLost", "heartbeat stale", "dead-worker", T0, at(90))
    assert get(store, alive.id).state == JobState.RUNNING
    assert store.jobs_rescue([], "x", now=at(91)) == []
    assert claim_one(store, now=at(92)).attempt == 1, "the lost attempt did not use the budget"


def test_a_rescue_never_makes_a_job_dead_whatever_its_retry_policy(store: Store) -> None:
    (job_id,) = insert(store, NewJob("a", max_attempts=1))
    for n in range(1, SUSPECT_AT + 1):
        claim_one(store, now=at(n), worker=f"w{n}")
        assert store.jobs_rescue([f"w{n}"], "killed", now=at(n)) == [job_id]
    after = get(store, job_id)
    assert (after.state, after.attempt, after.lost_count) == (JobState.READY, 0, SUSPECT_AT)
    assert store.jobs_rescue(["w9"], "nobody", now=at(9)) == []


def test_rescue_tells_running_finished_and_never_started_jobs_apart(store: Store) -> None:
    running, finished, waiting = insert(store, NewJob("a"), NewJob("b"), NewJob("c"))
    claimed = store.job_claim("w1", "default", 3, now=T0)
    assert [j.id for j in claimed] == [running, finished, waiting]
    held = {running: Held.RUNNING, finished: Held.FINISHED}  # waiting: not even in the ledger
    assert store.jobs_rescue(["w1"], "killed", held=held, now=at(5)) == [running, finished, waiting]
    jobs = {i: get(store, i) for i in (running, finished, waiting)}
    assert {j.state for j in jobs.values()} == {JobState.READY}
    assert [jobs[i].attempt for i in (running, finished, waiting)] == [0, 0, 0]
    assert [jobs[i].lost_count for i in (running, finished, waiting)] == [1, 0, 0]
    assert [a.outcome for a in store.job_attempts(running)] == [AttemptOutcome.WORKER_LOST]
    (done,) = store.job_attempts(finished)
    assert done.outcome == AttemptOutcome.WORKER_LOST and "had finished" in (done.error_message or "")
    assert store.job_attempts(waiting) == [] and jobs[waiting].error is None


def test_a_rescued_job_whose_cancellation_was_asked_ends_cancelled(store: Store) -> None:
    (job_id,) = insert(store, NewJob("a"))
    claim_one(store)
    assert store.job_cancel(job_id, now=at(1)) == JobState.RUNNING
    store.jobs_rescue(["w1"], "killed", held={job_id: Held.RUNNING}, now=at(2))
    after = get(store, job_id)
    assert (after.state, after.finished_at) == (JobState.CANCELLED, at(2))


def _make_suspect(store: Store, job_id: int) -> None:
    for n in range(SUSPECT_AT):
        claim_one(store, now=at(n), worker=f"lost{n}")
        store.jobs_rescue([f"lost{n}"], "killed", held={job_id: Held.RUNNING}, now=at(n))


def test_suspects_are_claimed_only_by_a_claim_that_asks_for_them(store: Store) -> None:
    suspect, ordinary = insert(store, NewJob("a"), NewJob("b"))
    _make_suspect(store, suspect)
    assert get(store, suspect).lost_count == SUSPECT_AT
    assert [j.id for j in store.job_claim("w", "default", 5, now=at(10))] == [ordinary]
    (alone,) = store.job_claim("w", "default", 5, suspects=True, now=at(11))
    assert (alone.id, alone.attempt, alone.lost_count) == (suspect, 1, SUSPECT_AT)
    assert store.job_claim("w", "default", 5, suspects=True, now=at(12)) == []


def test_a_job_that_kills_its_process_alone_is_dead_at_the_poison_limit(store: Store) -> None:
    (job_id,) = insert(store, NewJob("a", max_attempts=25))
    _make_suspect(store, job_id)
    (alone,) = store.job_claim("w", "default", 1, suspects=True, now=at(10))
    assert store.job_lost(job_id, "stale lease", "died", now=at(11)) is None
    assert store.job_lost(job_id, alone.lease or "", "process killed by SIGKILL",
                          now=at(11)) == JobState.DEAD
    after = get(store, job_id)
    assert (after.state, after.lost_count, after.finished_at) == (JobState.DEAD, 3, at(11))
    assert after.error is not None and "poison pill" in after.error
    attempts = store.job_attempts(job_id)
    assert [a.outcome for a in attempts] == [AttemptOutcome.WORKER_LOST] * 3
    assert "poison pill" in (attempts[-1].error_message or "") and attempts[-1].attempt == 1


def test_a_job_lost_alone_before_the_limit_runs_again(store: Store) -> None:
    (job_id,) = insert(store, NewJob("a"))
    job = claim_one(store)
    assert store.job_lost(job_id, job.lease or "", "died", now=at(1)) == JobState.READY
    after = get(store, job_id)
    assert (after.state, after.attempt, after.lost_count) == (JobState.READY, 0, 1)


def test_a_finished_attempt_resets_the_lost_count(store: Store) -> None:
    insert(store, NewJob("a", max_attempts=10))
    claim_one(store, now=at(1))
    store.jobs_rescue(["w1"], "lost", now=at(1))
    job = claim_one(store, now=at(2))
    failed = outcome(job, JobState.FAILED, AttemptOutcome.ERROR, retry_at=at(3))
    assert store.job_finish_many([failed], now=at(2)) == [True]
    assert get(store, job.id).lost_count == 0


def test_jobs_returned_unstarted_get_no_attempt_row(store: Store) -> None:
    started, unstarted = insert(store, NewJob("a"), NewJob("b"))
    jobs = store.job_claim("w1", "default", 2, now=T0)
    assert store.job_release([(jobs[0].id, jobs[0].lease or "")], now=at(1)) == 1
    assert store.job_release([(jobs[1].id, jobs[1].lease or "")], started=False, now=at(1)) == 1
    assert [a.outcome for a in store.job_attempts(started)] == [AttemptOutcome.SHUTDOWN]
    assert store.job_attempts(unstarted) == []
    assert get(store, unstarted).attempt == 0


# --- queues --------------------------------------------------------------------------------
def test_queue_stats_counts_paused_and_latency(store: Store) -> None:
    insert(store, NewJob("a", queue="mail"), NewJob("b", queue="mail", run_at=at(50)),
           NewJob("c", queue="mail"), now=T0)
    insert(store, NewJob("d", queue="mail"), now=at(5))
    insert(store, NewJob("e", queue="web"))
    claim_one(store, queue="web")
    store.queue_pause("idle")
    stats = {s.queue: s for s in store.queue_stats()}
    assert sorted(stats) == ["idle", "mail", "web"]
    mail = stats["mail"]
    assert (mail.count(JobState.READY), mail.count(JobState.SCHEDULED), mail.paused) == (3, 1, False)
    assert mail.oldest_ready_at == T0
    assert stats["web"].count(JobState.RUNNING) == 1 and stats["web"].oldest_ready_at is None
    assert stats["idle"].paused and stats["idle"].counts == {}
    store.queue_pause("mail")
    store.queue_pause("mail")
    assert {s.queue: s.paused for s in store.queue_stats()}["mail"]
    store.queue_resume("mail")
    assert not {s.queue: s.paused for s in store.queue_stats()}["mail"]


# --- processes -----------------------------------------------------------------------------
def process(pid: int, heartbeat: datetime = T0, **kw: object) -> ProcessRecord:
    fields: dict[str, object] = dict(
        id=f"host:{pid}", kind="worker", host="host", pid=pid, started_at=at(pid),
        heartbeat_at=heartbeat, supervisor_id="host:1", queues=("default", "mail"),
        concurrency=4, job_names=("m:a",),
    )
    fields.update(kw)
    return ProcessRecord(**fields)  # type: ignore[arg-type]


def test_process_register_list_heartbeat_stale_deregister(store: Store) -> None:
    store.process_register(process(2))
    store.process_register(process(1, kind="supervisor", supervisor_id=None, queues=()))
    assert store.process_list() == [
        process(1, kind="supervisor", supervisor_id=None, queues=()), process(2)]
    store.process_register(process(2, concurrency=8))  # re-registering replaces
    assert store.process_list()[1].concurrency == 8
    assert store.process_heartbeat("host:2", now=at(50)) == []
    assert store.process_list()[1].heartbeat_at == at(50)
    assert store.processes_stale(30, now=at(60)) == ["host:1"]
    assert sorted(store.processes_stale(5, now=at(60))) == ["host:1", "host:2"]
    store.process_deregister("host:1")
    assert [p.id for p in store.process_list()] == ["host:2"]


def test_an_unregistered_worker_holding_running_jobs_counts_as_stale(store: Store) -> None:
    insert(store)
    claim_one(store, worker="w-vanished", now=at(0))
    assert store.processes_stale(10, now=at(5)) == [], "not silent for long enough yet"
    assert store.processes_stale(10, now=at(11)) == ["w-vanished"]
    assert store.jobs_rescue(["w-vanished"], "gone", now=at(11))


def test_heartbeat_returns_the_workers_running_jobs_and_their_cancel_requests(
    store: Store,
) -> None:
    store.process_register(process(7))
    insert(store, NewJob("a"), NewJob("b"), NewJob("c"), NewJob("d"))
    first, second = claim_one(store, worker="host:7"), claim_one(store, worker="host:7")
    other = claim_one(store, worker="host:8")
    done = claim_one(store, worker="host:7")
    store.job_finish_many([outcome(done, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)])
    for job in (first, other):
        store.job_cancel(job.id, now=at(1))
    assert store.process_heartbeat("host:7", now=at(2)) == [
        HeldJob(first.id, first.lease or "", cancel_requested=True),
        HeldJob(second.id, second.lease or "", cancel_requested=False),
    ]


# --- leadership and wake-ups ---------------------------------------------------------------
def test_leadership_is_exclusive_until_released(store: Store) -> None:
    other = open_store(store.url)
    try:
        assert store.leader_acquire("maintenance", "a", 30)
        assert store.leader_acquire("maintenance", "a", 30)  # renew
        assert not other.leader_acquire("maintenance", "b", 30)
        assert not store.leader_acquire("maintenance", "c", 30)
        assert other.leader_acquire("cron", "b", 30)  # another name is independent
        store.leader_release("maintenance", "a")
        assert other.leader_acquire("maintenance", "b", 30)
        assert not store.leader_acquire("maintenance", "a", 30)
        other.leader_release("maintenance", "b")
        other.leader_release("maintenance", "b")  # twice is harmless
        assert store.leader_acquire("maintenance", "a", 30)
    finally:
        other.close()


def test_wait_for_jobs_returns_early_when_another_store_inserts(store: Store) -> None:
    other = open_store(store.url)
    store.wait_for_jobs(0.01)  # set up whatever the backend listens with
    took: list[float] = []

    def wait() -> None:
        start = time.monotonic()
        store.wait_for_jobs(10)
        took.append(time.monotonic() - start)

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        deadline = time.monotonic() + 5
        while waiter.is_alive() and time.monotonic() < deadline:
            other.job_insert_many([NewJob("wake")])  # until the waiter notices one
            waiter.join(0.05)
    finally:
        waiter.join(15)
        other.close()
    assert took and took[0] < 3


def test_wait_for_jobs_waits_about_the_timeout_when_nothing_happens(store: Store) -> None:
    store.wait_for_jobs(0.01)
    start = time.monotonic()
    store.wait_for_jobs(0.3)
    assert 0.25 <= time.monotonic() - start < 2


# --- transactional enqueue -------------------------------------------------------------------
@pytest.fixture
def app_connection(store_url: str) -> Iterator[Any]:
    """The application's own connection to the store's database (sqlite3 or psycopg)."""
    if store_url.startswith("sqlite"):
        conn: Any = sqlite3.connect(sqlite_path(store_url))  # implicit BEGIN before writes
    else:
        conn = psycopg.connect(store_url)
    yield conn
    conn.close()


def test_enqueue_joins_the_callers_transaction(store: Store, app_connection: Any) -> None:
    (rolled_back,) = ids(store.job_insert_many([NewJob("gone")], connection=app_connection, now=T0))
    app_connection.rollback()
    assert store.job_get(rolled_back) is None and store.job_list(JobFilter()) == []
    (kept,) = ids(store.job_insert_many([NewJob("kept")], connection=app_connection, now=T0))
    assert store.job_get(kept) is None  # not visible before the caller commits
    app_connection.commit()
    assert [j.name for j in store.job_list(JobFilter())] == ["kept"]
    assert get(store, kept).state == JobState.READY


def test_enqueue_with_a_foreign_connection_object_is_a_configuration_error(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="connection"):
        store.job_insert_many([NewJob("a")], connection=object())


# --- schema ----------------------------------------------------------------------------------
def test_migrate_is_idempotent_and_records_the_version(store: Store) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    assert store.schema_version() == SCHEMA_VERSION


def test_a_closed_store_reopens_on_next_use(store: Store) -> None:
    insert(store)
    store.close()
    assert len(store.job_list(JobFilter())) == 1


@pytest.fixture
def fresh_url(store_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema) of the same backend."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"conveyor_fresh_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{store_url.rpartition('/')[0]}/{name}"
    with psycopg.connect(store_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def raw_execute(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(sqlite_path(url))) as conn, conn:
            conn.execute(sql)
    else:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)


def test_a_store_without_schema_says_to_migrate(fresh_url: str) -> None:
    store = open_store(fresh_url)
    try:
        assert store.schema_version() is None
        with pytest.raises(SchemaError, match="run: conveyor migrate"):
            store.job_get(1)
        with pytest.raises(SchemaError, match="run: conveyor migrate"):
            store.job_insert_many([NewJob("a")])
    finally:
        store.close()


def _index_names(url: str) -> set[str]:
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(sqlite_path(url))) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    else:
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT indexname FROM pg_indexes").fetchall()
    return {r[0] for r in rows}


def test_a_version_1_store_with_jobs_upgrades_and_keeps_them(fresh_url: str) -> None:
    from conveyor.store.shared import migrations

    backend = "sqlite" if fresh_url.startswith("sqlite") else "postgres"
    version, first = migrations(backend)[0]
    assert version == 1
    if backend == "sqlite":  # as a store of schema version 1 left it
        with closing(sqlite3.connect(sqlite_path(fresh_url))) as conn, conn:
            conn.executescript(first)  # creates conveyor_schema too
            conn.execute("INSERT INTO conveyor_schema VALUES (1, 0)")
            conn.execute("INSERT INTO conveyor_jobs (name, state, run_at, created_at)"
                         " VALUES ('old', 'dead', 0, 0)")
    else:
        with psycopg.connect(fresh_url, autocommit=True) as conn:
            conn.execute(first)  # creates conveyor_schema too
            conn.execute("INSERT INTO conveyor_schema (version) VALUES (1)")
            conn.execute("INSERT INTO conveyor_jobs (name, state, run_at, created_at)"
                         " VALUES ('old', 'dead', now(), now())")
    assert {"conveyor_jobs_state", "conveyor_jobs_name"} <= _index_names(fresh_url)
    store = open_store(fresh_url)
    try:
        assert store.schema_version() == 1
        assert store.migrate() == SCHEMA_VERSION
        [old] = store.job_list(JobFilter(states=(JobState.DEAD,), name="old"))
        assert old.name == "old"
        assert store.job_ids_by_state(JobState.DEAD) == [old.id]
        assert [q.counts for q in store.queue_stats()] == [{JobState.DEAD: 1}]
    finally:
        store.close()
    names = _index_names(fresh_url)
    assert {"conveyor_jobs_quiet_state", "conveyor_jobs_quiet_name"} <= names
    assert not {"conveyor_jobs_state", "conveyor_jobs_name"} & names, (
        "whole-table indexes on state and name cost every claim and finish an index insert")


def test_concurrent_migrations_all_succeed_once(fresh_url: str) -> None:
    results: list[object] = []

    def migrate() -> None:
        mine = open_store(fresh_url)
        try:
            results.append(mine.migrate())
        except Exception as e:  # collected, asserted below
            results.append(e)
        finally:
            mine.close()

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [SCHEMA_VERSION] * 4
    store = open_store(fresh_url)
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert len(store.job_insert_many([NewJob("a")])) == 1
    finally:
        store.close()


def test_a_schema_newer_than_the_code_is_refused(fresh_url: str) -> None:
    store = open_store(fresh_url)
    try:
        store.migrate()
        raw_execute(fresh_url, "INSERT INTO conveyor_schema (version, applied_at)"
                               f" VALUES ({SCHEMA_VERSION + 1}, CURRENT_TIMESTAMP)")
        with pytest.raises(SchemaError, match="newer") as refused:
            store.migrate()
        assert "\n" not in str(refused.value)
        assert store.schema_version() == SCHEMA_VERSION + 1
    finally:
        store.close()


# --- health facts (conveyor doctor) ----------------------------------------------------------
def register(store: Store, worker_id: str, heartbeat: datetime, kind: str = "worker") -> None:
    store.process_register(ProcessRecord(
        id=worker_id, kind=kind, host="h1", pid=1, started_at=T0, heartbeat_at=heartbeat,
        queues=("default",), concurrency=4, job_names=("a",)))


def test_health_facts_of_an_empty_store(store: Store) -> None:
    facts = store.health_facts(stale_after=30, now=at(5))
    assert facts.now == at(5)
    assert abs((facts.store_clock - datetime.now(UTC)).total_seconds()) < 5, "a real clock reading"
    assert (facts.waiting_by_name, facts.running_by_worker, facts.stuck, facts.overdue,
            facts.oldest_overdue_at, facts.dead_recent, facts.unknown_recent) == (
        {}, {}, (), 0, None, {}, {})
    live = store.health_facts(stale_after=30)
    assert abs((live.now - live.store_clock).total_seconds()) < 1, "now=None: the store's clock"


def test_health_facts_find_stuck_running_jobs(store: Store) -> None:
    register(store, "w-live", at(100))
    register(store, "w-stale", at(0))
    timed, fine, silent, orphan = insert(
        store, NewJob("timed", queue="q1", timeout=10), NewJob("fine", queue="q1"),
        NewJob("silent", queue="q2"), NewJob("orphan", queue="q3"))
    for seconds, worker, queue in ((1, "w-live", "q1"), (1, "w-live", "q1"),
                                   (2, "w-stale", "q2"), (3, "w-gone", "q3")):
        claim_one(store, worker=worker, queue=queue, now=at(seconds))
    facts = store.health_facts(stale_after=30, timeout_grace=5, now=at(100))
    assert [j.id for j in facts.stuck] == [timed, silent, orphan], "oldest first; fine is fine"
    assert facts.stuck[1].worker_id == "w-stale" and facts.stuck[0].timeout == 10
    assert facts.running_by_worker == {"w-live": 2, "w-stale": 1, "w-gone": 1}
    later = store.health_facts(stale_after=30, timeout_grace=500, limit=1, now=at(100))
    assert [j.id for j in later.stuck] == [silent], "within grace; limited to one"
    assert fine not in [j.id for j in store.health_facts(stale_after=1000, now=at(100)).stuck]


def test_health_facts_count_waiting_overdue_dead_and_unknown_jobs(store: Store) -> None:
    insert(store, NewJob("a"), NewJob("a"), NewJob("later", run_at=at(1000)),
           NewJob("late", run_at=at(20)))
    ghost, gone, d1, d2, boom, old = insert(
        store, *[NewJob(n, queue="x", max_attempts=3) for n in
                 ("ghost", "gone", "d", "d", "mod:boom", "old")])
    jobs = {j.id: j for j in store.job_claim("w1", "x", 10, now=T0)}
    store.job_finish_many([
        outcome(jobs[ghost], JobState.FAILED, AttemptOutcome.ERROR, error_class="UnknownJob",
                error_message="no job named 'ghost'", retry_at=at(10)),
        outcome(jobs[gone], JobState.DEAD, AttemptOutcome.ERROR, error_class="UnknownJob",
                error_message="no job named 'gone'"),
        outcome(jobs[d1], JobState.DEAD, AttemptOutcome.ERROR, error_class="KeyError",
                error_message="'k'"),
        outcome(jobs[d2], JobState.DEAD, AttemptOutcome.TIMEOUT, error_class="KeyError"),
        outcome(jobs[boom], JobState.DEAD, AttemptOutcome.ERROR, error_class="mod.Boom",
                error_message="bad: very"),
        outcome(jobs[old], JobState.DEAD, AttemptOutcome.ERROR, error_class="OldError",
                finished_at=at(-7200)),
    ], now=at(90))
    facts = store.health_facts(stale_after=30, now=at(100))
    assert facts.waiting_by_name == {"a": 2, "later": 1, "late": 1, "ghost": 1}
    assert (facts.overdue, facts.oldest_overdue_at) == (2, at(10)), "late and ghost's retry"
    assert facts.dead_recent == {("gone", "UnknownJob"): 1, ("d", "KeyError"): 2,
                                 ("mod:boom", "mod.Boom"): 1}
    assert facts.unknown_recent == {"ghost": 1, "gone": 1}
    assert store.health_facts(stale_after=30, overdue_after=100, now=at(100)).overdue == 0
    assert store.health_facts(stale_after=30, now=at(7200)).dead_recent == {}

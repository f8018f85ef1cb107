"""Inserts report, per job, whether it was created or which unfinished job holds its unique key.
Every test runs on SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from conveyor.errors import DuplicateJob, StoreError, StoreUnavailable
from conveyor.models import AttemptOutcome, Inserted, JobFilter, JobOutcome, JobState, NewJob
from conveyor.store import Store
from conveyor.store.sqlite import sqlite_path

from .test_contract import T0, claim_one, get, outcome

COPY_SIZED = 100  # PostgreSQL writes 64 or more jobs with one COPY when none has a key


def keyed(key: str | None, name: str = "job") -> NewJob:
    return NewJob(name, unique_key=key)


def test_a_single_insert_whose_key_is_held_reports_the_holder(store: Store) -> None:
    [first] = store.job_insert_many([keyed("k", "first")], now=T0)
    [second] = store.job_insert_many([keyed("k", "second")], now=T0)
    assert first.created and second == Inserted(first.id, False)
    assert [j.name for j in store.job_list(JobFilter())] == ["first"]


@pytest.mark.parametrize("n", [10, COPY_SIZED])
def test_a_batch_reports_each_job_in_order(store: Store, n: int) -> None:
    [held] = store.job_insert_many([keyed("k3", "old")], now=T0)
    jobs = [keyed(f"k{i}" if i % 3 == 0 else None, f"j{i}") for i in range(n)]
    got = store.job_insert_many(jobs, now=T0)
    assert len(got) == n
    assert got[3] == Inserted(held.id, False)
    created = [g for i, g in enumerate(got) if i != 3]
    assert all(g.created for g in created)
    assert [g.id for g in created] == sorted(g.id for g in created), "ids in input order"
    for i, g in enumerate(got):
        if i != 3:
            assert get(store, g.id).name == f"j{i}"
    assert len(store.job_list(JobFilter(limit=1000))) == n  # n - 1 new ones and the old one


@pytest.mark.parametrize("n", [4, COPY_SIZED])
def test_two_jobs_with_one_key_in_a_batch_the_first_is_created(store: Store, n: int) -> None:
    jobs = [keyed(None, f"j{i}") for i in range(n)]
    jobs[1], jobs[n - 1] = keyed("same", "first"), keyed("same", "second")
    got = store.job_insert_many(jobs, now=T0)
    assert got[1].created and got[n - 1] == Inserted(got[1].id, False)
    assert get(store, got[1].id).name == "first"
    assert len(store.job_list(JobFilter(limit=1000))) == n - 1


def test_a_key_is_free_again_once_its_job_finished(store: Store) -> None:
    [first] = store.job_insert_many([keyed("k")], now=T0)
    job = claim_one(store)
    assert store.job_finish_many([outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED)],
                                 now=T0) == [True]
    [again] = store.job_insert_many([keyed("k")], now=T0)
    assert again.created and again.id != first.id
    [third] = store.job_insert_many([keyed("k")], now=T0)
    assert third == Inserted(again.id, False)


def test_a_cancelled_job_frees_its_key(store: Store) -> None:
    [first] = store.job_insert_many([keyed("k")], now=T0)
    assert store.job_cancel(first.id, now=T0) == JobState.CANCELLED
    [again] = store.job_insert_many([keyed("k")], now=T0)
    assert again.created


def test_retrying_a_job_whose_key_was_taken_is_a_duplicate_job(store: Store) -> None:
    [first] = store.job_insert_many([keyed("k")], now=T0)
    store.job_cancel(first.id, now=T0)
    [second] = store.job_insert_many([keyed("k")], now=T0)
    with pytest.raises(DuplicateJob) as taken:
        store.job_retry([first.id], now=T0)
    assert "\n" not in str(taken.value)
    assert get(store, first.id).state == JobState.CANCELLED
    assert get(store, second.id).state == JobState.READY


def test_duplicate_job_carries_the_existing_id() -> None:
    error = DuplicateJob("taken", existing_id=7, unique_key="k")
    assert (error.existing_id, error.unique_key, str(error)) == (7, "k", "taken")
    assert DuplicateJob().existing_id is None


@pytest.fixture
def app_connection(store: Store) -> Iterator[Any]:
    """The application's own connection to the store's database (sqlite3 or psycopg)."""
    if store.url.startswith("sqlite"):
        conn: Any = sqlite3.connect(sqlite_path(store.url))  # implicit BEGIN before writes
    else:
        conn = psycopg.connect(store.url)
    yield conn
    conn.close()


@pytest.mark.parametrize("n", [1, 5, COPY_SIZED])
def test_a_held_key_inside_the_callers_transaction(
    store: Store, app_connection: Any, n: int,
) -> None:
    [held] = store.job_insert_many([keyed("k", "held")], now=T0)
    jobs = [keyed("k", "again")] + [keyed(None, f"j{i}") for i in range(n - 1)]
    got = store.job_insert_many(jobs, connection=app_connection, now=T0)
    assert got[0] == Inserted(held.id, False) and all(g.created for g in got[1:])
    [mine] = store.job_insert_many([keyed("mine", "mine")], connection=app_connection, now=T0)
    [again] = store.job_insert_many([keyed("mine")], connection=app_connection, now=T0)
    assert mine.created and again == Inserted(mine.id, False), "its own uncommitted job holds it"
    app_connection.commit()
    assert get(store, mine.id).name == "mine"
    assert len(store.job_list(JobFilter(limit=1000))) == n + 1


def test_a_failed_attempt_keeps_its_key_held(store: Store) -> None:
    [first] = store.job_insert_many([NewJob("job", unique_key="k", max_attempts=3)], now=T0)
    job = claim_one(store)
    failed: JobOutcome = outcome(job, JobState.FAILED, AttemptOutcome.ERROR, error_class="E",
                                 retry_at=T0)
    assert store.job_finish_many([failed], now=T0) == [True]
    assert store.job_insert_many([keyed("k")], now=T0) == [Inserted(first.id, False)]


def test_an_integrity_error_is_a_store_error_not_an_outage(store: Store) -> None:
    with pytest.raises(StoreError) as refused:
        store.job_insert_many([NewJob(None)], now=T0)  # type: ignore[arg-type]
    assert not isinstance(refused.value, StoreUnavailable)
    assert "\n" not in str(refused.value)

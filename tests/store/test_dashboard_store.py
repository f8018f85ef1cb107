"""What the dashboard reads from the store, on SQLite and PostgreSQL: sensitive argument keys,
argument search, the audit trail, per-minute history and metric totals, change notices.
Times are frozen at whole seconds from ``T0``, a whole minute."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest

from conveyor.cron import ScheduleDef
from conveyor.models import (
    HISTOGRAM_BOUNDS,
    AttemptOutcome,
    JobFilter,
    JobOutcome,
    JobRecord,
    JobState,
    MinuteStats,
    NewJob,
    bucket_metric,
)
from conveyor.store import SCHEMA_VERSION, Store, open_store
from conveyor.store import shared as store_shared

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
postgres_only = pytest.mark.parametrize("store_url", ["postgres"], indirect=True)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def insert(store: Store, *jobs: NewJob, now: datetime = T0) -> list[int]:
    done = store.job_insert_many(list(jobs), now=now)
    assert all(d.created for d in done)
    return [d.id for d in done]


def finish(store: Store, job: JobRecord, state: JobState, when: datetime, **kw: object) -> None:
    assert job.lease is not None and job.started_at is not None
    how = AttemptOutcome.SUCCEEDED if state is JobState.SUCCEEDED else AttemptOutcome.ERROR
    fields: dict[str, object] = dict(
        job_id=job.id, lease=job.lease, attempt=job.attempt, worker_id="w1",
        started_at=job.started_at, state=state, outcome=how,
    )
    if state is not JobState.SUCCEEDED:
        fields.update(error_class="ValueError", error_message="boom")
    fields.update(kw)
    assert store.job_finish_many([JobOutcome(**fields)], now=when) == [True]  # type: ignore[arg-type]


# --- sensitive argument keys ------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 3, 100])  # PostgreSQL: one row, an unnest batch, COPY
def test_sensitive_keys_round_trip_whatever_the_insert_path(store: Store, n: int) -> None:
    jobs = [NewJob("j", kwargs='{"password": "x"}', sensitive=("password", "card") if i % 2 == 0
                   else ()) for i in range(n)]
    for job_id, new in zip(insert(store, *jobs), jobs, strict=True):
        got = store.job_get(job_id)
        assert got is not None and got.sensitive == new.sensitive


def test_sensitive_keys_go_with_unique_and_limited_jobs_and_come_back_on_claim(store: Store) -> None:
    insert(store, NewJob("j", unique_key="u", sensitive=("token",)),
           NewJob("j", concurrency_key="c", concurrency_max=5, sensitive=("a", "b")))
    claimed = store.job_claim("w1", "default", 5, now=T0)
    assert sorted(j.sensitive for j in claimed) == [("a", "b"), ("token",)]
    assert [j.sensitive for j in store.job_list(JobFilter())] == [("a", "b"), ("token",)]


def test_a_schedule_keeps_the_sensitive_keys_of_its_job(store: Store) -> None:
    job = NewJob("tests:login", kwargs='{"password": "x"}', sensitive=("password",))
    store.cron_register([ScheduleDef("login", "* * * * *", "UTC", job)], now=T0)
    _, [state] = store.cron_states(now=T0)
    assert state.job == job
    job_id = store.cron_run_now("login", None, now=T0)
    assert job_id is not None and store.job_get(job_id).sensitive == ("password",)  # type: ignore[union-attr]


# --- search -------------------------------------------------------------------------------------
def test_search_matches_args_kwargs_and_errors_ignoring_case(store: Store) -> None:
    a, b, c, _ = insert(
        store, NewJob("j", args='["Alice@Example.com"]'),
        NewJob("j", kwargs='{"to": "ALICE@example.com"}'), NewJob("j"), NewJob("j", args='["bob"]'),
    )
    [job] = [j for j in store.job_claim("w1", "default", 10, now=T0) if j.id == c]
    finish(store, job, JobState.DEAD, at(1), error_message="alice's quota is full")
    found, more = store.job_search(JobFilter(), "alice@")
    assert [j.id for j in found] == [b, a] and more is None
    found, _ = store.job_search(JobFilter(), "QUOTA")
    assert [j.id for j in found] == [c]


def test_search_takes_percent_underscore_and_backslash_literally(store: Store) -> None:
    pct, under, slash, _ = insert(
        store, NewJob("j", args='["50%"]'), NewJob("j", args='["a_b"]'),
        NewJob("j", args='["c:\\\\d"]'), NewJob("j", args='["500", "axb", "c:d", "c:\\/d"]'),
    )
    assert [j.id for j in store.job_search(JobFilter(), "50%")[0]] == [pct]
    assert [j.id for j in store.job_search(JobFilter(), "a_b")[0]] == [under]
    assert [j.id for j in store.job_search(JobFilter(), "c:\\\\d")[0]] == [slash]


def test_search_applies_the_filter(store: Store) -> None:
    insert(store, NewJob("j", args='["x"]', queue="a"), NewJob("k", args='["x"]', queue="b"))
    [found], _ = store.job_search(JobFilter(queue="b"), "x")
    assert found.queue == "b"
    [found], _ = store.job_search(JobFilter(name="j", states=(JobState.READY,)), "x")
    assert found.name == "j"
    assert store.job_search(JobFilter(states=(JobState.DEAD,)), "x") == ([], None)


def test_search_looks_at_budget_rows_then_says_where_to_go_on(store: Store) -> None:
    ids = insert(store, *[NewJob("j", args=f'["needle {i}"]' if i % 2 else '["hay"]')
                          for i in range(30)])
    found, more = store.job_search(JobFilter(), "needle", budget=10)
    assert [j.id for j in found] == [i for i in ids[20:] if (i - ids[0]) % 2][::-1]
    assert more == ids[20]  # the oldest job looked at: the next call looks below it
    found, more = store.job_search(JobFilter(before_id=more), "needle", budget=10)
    assert [j.id for j in found] == [i for i in ids[10:20] if (i - ids[0]) % 2][::-1]
    found, more = store.job_search(JobFilter(before_id=ids[5]), "needle", budget=10)
    assert len(found) == 2 and more is None  # fewer than budget jobs were left


def test_a_full_page_of_matches_goes_on_below_its_last_match(store: Store) -> None:
    ids = insert(store, *[NewJob("j", args='["needle"]') for _ in range(12)])
    found, more = store.job_search(JobFilter(limit=5), "needle")
    assert [j.id for j in found] == ids[::-1][:5] and more == ids[7]
    found, more = store.job_search(JobFilter(limit=5, before_id=more), "needle")
    assert [j.id for j in found] == ids[::-1][5:10]
    found, more = store.job_search(JobFilter(limit=5, before_id=more), "needle")
    assert [j.id for j in found] == ids[1::-1] and more is None


# --- audit --------------------------------------------------------------------------------------
def test_audit_entries_come_back_newest_first_and_page_by_id(store: Store) -> None:
    store.audit_add("ann", "retry", "job 1", now=at(1))
    store.audit_add("bob", "pause", "queue mail", "until the outage ends", now=at(2))
    store.audit_add("ann", "discard", "job 2")
    first, second, third = store.audit_list()
    assert (first.actor, first.action, first.target, first.detail) == ("ann", "discard", "job 2", "")
    assert (second.at, second.detail) == (at(2), "until the outage ends")
    assert third.at == at(1) and third.id < second.id < first.id
    assert [e.action for e in store.audit_list(limit=1, before_id=second.id)] == ["retry"]
    assert abs((first.at - datetime.now(UTC)).total_seconds()) < 60  # the store's clock


# --- history ------------------------------------------------------------------------------------
def _busy_minute(store: Store) -> None:
    """Queue a: one success (ran 0.5 s, waited 1 s), one failure to retry (ran 2 s), one dead
    (ran 10 s, waited 1 s). Queue b: two jobs still ready since second 1."""
    insert(store, *[NewJob("job", queue="a", max_attempts=1) for _ in range(3)], now=at(1))
    insert(store, *[NewJob("other", queue="b") for _ in range(2)], now=at(1))
    ok, retried, dead = store.job_claim("w1", "a", 3, now=at(2))
    finish(store, ok, JobState.SUCCEEDED, at(2.5))
    finish(store, retried, JobState.FAILED, at(4), retry_at=at(500))
    finish(store, dead, JobState.DEAD, at(12))


def test_a_sample_counts_the_minute_per_queue(store: Store) -> None:
    _busy_minute(store)
    assert store.history_sample(at(30))
    a, b = store.history_list(T0)
    assert a == MinuteStats(minute=T0, queue="a", enqueued=3, succeeded=1, failed=2, dead=1,
                            ready=0, latency=None, duration_sum=12.5, duration_count=3)
    assert b == MinuteStats(minute=T0, queue="b", enqueued=2, succeeded=0, failed=0, dead=0,
                            ready=2, latency=29.0, duration_sum=0.0, duration_count=0)


def test_one_sample_a_minute_and_each_counts_only_what_is_new(store: Store) -> None:
    _busy_minute(store)
    assert store.history_sample(at(30))
    assert not store.history_sample(at(59))
    other = open_store(store.url)
    try:
        assert not other.history_sample(at(45))  # another leader, the same minute
    finally:
        other.close()
    insert(store, NewJob("job", queue="a"), now=at(50))
    assert store.history_sample(at(61))
    later = [s for s in store.history_list(at(60)) if s.queue == "a"]
    assert [(s.minute, s.enqueued, s.succeeded, s.failed, s.dead) for s in later] == [
        (at(60), 1, 0, 0, 0)]
    assert store.history_list(at(60), queue="b")[0].ready == 2
    assert [s.minute for s in store.history_list(T0, queue="a")] == [T0, at(60)]


def test_metric_totals_add_up_counters_and_histograms(store: Store) -> None:
    _busy_minute(store)
    store.history_sample(at(30))
    insert(store, NewJob("job", queue="a"), now=at(70))
    store.history_sample(at(90))
    totals = {(t.queue, t.job, t.metric): t.value for t in store.metric_totals()}
    a = {metric: v for (q, job, metric), v in totals.items() if (q, job) == ("a", "job")}
    assert (a["enqueued"], a["succeeded"], a["failed"], a["dead"]) == (4, 1, 2, 1)
    assert (a["duration_count"], a["duration_sum"]) == (3, 12.5)
    durations = {b: a[bucket_metric("duration", b)] for b in HISTOGRAM_BOUNDS}
    assert (durations[0.25], durations[0.5], durations[1.0], durations[2.5]) == (0, 1, 1, 2)
    assert (durations[10.0], durations[float("inf")]) == (3, 3)
    assert (a["wait_count"], a["wait_sum"], a[bucket_metric("wait", 1.0)]) == (2, 2.0, 2)
    assert a[bucket_metric("wait", 0.5)] == 0
    assert {m for (q, _, m) in totals if q == "b"} == {"enqueued"}
    assert bucket_metric("wait", float("inf")) == "wait_le:inf"


def test_an_idle_minute_records_only_ready_queues(store: Store) -> None:
    assert store.history_sample(T0)
    assert store.history_list(T0) == [] and store.metric_totals() == []
    insert(store, NewJob("j", queue="waiting", run_at=at(3600)), now=at(1))
    assert store.history_sample(at(60))
    [s] = store.history_list(T0)
    assert (s.queue, s.enqueued, s.ready, s.latency) == ("waiting", 1, 0, None)


def test_after_a_gap_wider_than_a_sample_reads_only_the_newest_ids_are_counted(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bulk import or a restore: one sample counts the newest MAX_IDS enqueues and passes
    over the rest, so no sample ever reads the whole gap, and the next one is back to normal."""
    from conveyor.store import historyrows

    assert store.history_sample(T0)
    monkeypatch.setattr(historyrows, "MAX_IDS", 5)
    insert(store, *[NewJob("bulk", queue="a") for _ in range(12)], now=at(61))
    assert store.history_sample(at(90))
    insert(store, *[NewJob("bulk", queue="a") for _ in range(3)], now=at(121))
    assert store.history_sample(at(150))
    assert [(s.minute, s.enqueued) for s in store.history_list(T0, queue="a")] == [
        (at(60), 5), (at(120), 3)]


def test_history_prune_deletes_minutes_before_the_cutoff(store: Store) -> None:
    for minute in range(3):
        insert(store, NewJob("j"), now=at(minute * 60))
        assert store.history_sample(at(minute * 60 + 1))
    assert store.history_prune(at(120)) == 2
    assert [s.minute for s in store.history_list(T0)] == [at(120)]
    assert store.history_prune(at(120)) == 0


def test_an_upgraded_store_counts_from_the_upgrade_not_its_first_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with closing(sqlite3.connect(tmp_path / "old.db", isolation_level=None)) as conn:
        conn.execute("CREATE TABLE conveyor_schema (version INTEGER PRIMARY KEY,"
                     " applied_at REAL NOT NULL)")
        for version, script in store_shared.migrations("sqlite"):
            if version < SCHEMA_VERSION:
                conn.executescript(script)
                conn.execute("INSERT INTO conveyor_schema VALUES (?, 0)", (version,))
    store = open_store(url)
    try:
        insert(store, *[NewJob("old") for _ in range(5)], now=at(1))
        assert store.migrate() == SCHEMA_VERSION
        insert(store, NewJob("new"), now=at(2))
        assert store.history_sample(at(3))
        assert [(s.enqueued, s.ready) for s in store.history_list(T0)] == [(1, 6)]
    finally:
        store.close()


# --- change notices -------------------------------------------------------------------------------
def _notices(store: Store, other: Store) -> list[tuple[str, Callable[[], object]]]:
    """Writes by ``other`` that a live view must hear of, in an order that makes each apply."""
    state: dict[str, JobRecord] = {}

    def claim() -> None:
        state["job"] = other.job_claim("w1", "default", 1)[0]

    def job() -> JobRecord:
        return state["job"]

    return [
        ("enqueue", lambda: other.job_insert_many([NewJob("a", max_attempts=3)])),
        ("progress", lambda: (claim(), other.job_progress(job().id, job().lease or "", 50, "half"))),
        ("finish", lambda: finish(other, job(), JobState.DEAD, datetime.now(UTC))),
        ("retry", lambda: other.job_retry([job().id])),
        ("cancel", lambda: other.job_cancel(job().id)),
        ("discard", lambda: other.job_discard([job().id])),
        ("pause", lambda: other.queue_pause("default")),
        ("resume", lambda: other.queue_resume("default")),
    ]


def test_every_write_a_live_view_shows_is_noticed(store: Store) -> None:
    other = open_store(store.url)
    try:
        assert not store.wait_for_changes(0.05)  # nothing since it began
        for name, write in _notices(store, other):
            write()
            start = time.monotonic()
            assert store.wait_for_changes(5), name
            assert time.monotonic() - start < 1, name
            assert not store.wait_for_changes(0.3), f"{name}: noticed twice"
    finally:
        other.close()


def test_a_change_between_calls_is_reported_by_the_next_call_at_once(store: Store) -> None:
    store.wait_for_changes(0)
    insert(store, NewJob("a"))  # the same store object, another of its connections
    time.sleep(0.3)
    start = time.monotonic()
    assert store.wait_for_changes(5)
    assert time.monotonic() - start < 0.1


@postgres_only
def test_a_finish_batch_sends_one_notice_and_a_stale_one_none(store: Store) -> None:
    insert(store, *[NewJob("a") for _ in range(3)])
    jobs = store.job_claim("w1", "default", 3)
    with psycopg.connect(store.url, autocommit=True) as listener:
        listener.execute("LISTEN conveyor_changes")
        outcomes = [JobOutcome(job_id=j.id, lease=j.lease or "", attempt=j.attempt,
                               worker_id="w1", started_at=j.started_at or T0,
                               state=JobState.SUCCEEDED, outcome=AttemptOutcome.SUCCEEDED)
                    for j in jobs]
        assert store.job_finish_many(outcomes) == [True] * 3
        assert len(list(listener.notifies(timeout=0.5))) == 1
        assert store.job_finish_many(outcomes) == [False] * 3  # stale: nothing changed
        assert list(listener.notifies(timeout=0.3)) == []


@postgres_only
def test_nothing_is_noticed_of_an_enqueue_rolled_back(store: Store) -> None:
    store.wait_for_changes(0)
    with psycopg.connect(store.url) as app:
        store.job_insert_many([NewJob("a")], connection=app)
        app.rollback()
    assert not store.wait_for_changes(0.3)


@postgres_only
def test_a_lost_listener_says_changed_and_listens_again(store: Store) -> None:
    from tests.store.test_postgres import terminate

    store.wait_for_changes(0)
    # this store's listener (a feed of an earlier test's dashboard may still listen too)
    assert terminate(store.url, "query = 'LISTEN conveyor_changes'") >= 1
    assert store.wait_for_changes(0.3)  # notices, drops the connection, sleeps out the timeout
    assert store.wait_for_changes(0.3)  # a new connection: changes may have been missed
    assert not store.wait_for_changes(0.2)
    insert(store, NewJob("a"))
    assert store.wait_for_changes(5)


@postgres_only
def test_a_burst_of_finishes_notifies_at_most_twice_a_second_and_after_the_last(
    store: Store,
) -> None:
    insert(store, *[NewJob("a") for _ in range(20)])
    jobs = store.job_claim("w1", "default", 20)
    with psycopg.connect(store.url, autocommit=True) as listener:
        listener.execute("LISTEN conveyor_changes")
        for job in jobs:
            finish(store, job, JobState.SUCCEEDED, datetime.now(UTC))
        done = time.monotonic()
        arrived = []
        for _ in listener.notifies(timeout=1.5):
            arrived.append(time.monotonic())
    assert 2 <= len(arrived) <= 4, arrived
    assert arrived[-1] > done  # the finishes that went without are announced afterwards
    assert all(later - earlier > 0.4 for earlier, later in pairwise(arrived))


def test_watching_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'nothing here.db'}")
    try:
        assert store.wait_for_changes(0.05)  # cannot watch: says changed, never raises
        assert not (tmp_path / "nothing here.db").exists()
    finally:
        store.close()

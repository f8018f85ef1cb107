"""The cron part of the Store contract, on SQLite and PostgreSQL: schedule rows, the tick table
and its exactly-once write, pause, run now and history. Times are frozen at whole seconds."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from conveyor.cron import ScheduleDef, TickPlan, TickStatus
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.store import Store, open_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
JOB = NewJob(name="tests:report", args="[1]", queue="crons", priority=3, max_attempts=2)


def register(store: Store, name: str = "report", at: datetime = T0) -> None:
    store.cron_register([ScheduleDef(name, "* * * * *", "UTC", JOB)], now=at)


def fired(*minutes: int) -> list[TickPlan]:
    return [TickPlan(T0 + timedelta(minutes=m), TickStatus.FIRED) for m in minutes]


def jobs(store: Store) -> list[int]:
    return sorted(j.id for j in store.job_list(JobFilter(name="tests:report", limit=1000)))


def test_a_schedule_is_first_seen_once(store: Store) -> None:
    register(store, at=T0)
    register(store, at=T0 + timedelta(hours=1))  # a later sighting keeps the first
    now, states = store.cron_states(now=T0 + timedelta(hours=2))
    assert now == T0 + timedelta(hours=2)
    [state] = states
    assert state.first_seen_at == T0
    assert state.seen_at == T0 + timedelta(hours=1)
    assert state.last_tick_at is None and not state.paused
    assert state.job == JOB


def test_a_recorded_tick_enqueues_its_job_in_the_same_transaction(store: Store) -> None:
    register(store)
    ids = store.cron_record("report", None, fired(1), JOB, recorded_by="s1", now=T0 + timedelta(minutes=1))
    assert ids is not None and len(ids) == 1
    job = store.job_get(ids[0])
    assert job is not None and (job.queue, job.priority, job.args) == ("crons", 3, "[1]")
    [tick] = store.cron_history("report")
    assert (tick.status, tick.job_id, tick.manual) == (TickStatus.FIRED, ids[0], False)
    assert tick.outcome is JobState.READY
    _, [state] = store.cron_states(now=T0)
    assert state.last_tick_at == T0 + timedelta(minutes=1)


def test_a_second_scheduler_from_the_same_base_records_nothing(store: Store) -> None:
    register(store)
    assert store.cron_record("report", None, fired(1), JOB, recorded_by="s1", now=T0)
    assert store.cron_record("report", None, fired(1), JOB, recorded_by="s2", now=T0) is None
    assert len(jobs(store)) == 1
    assert len(store.cron_history("report")) == 1


def test_racing_schedulers_enqueue_one_job_per_tick(store: Store, store_url: str) -> None:
    register(store)
    results: list[object] = []
    barrier = threading.Barrier(6)

    def scheduler(n: int) -> None:
        own = open_store(store_url)
        try:
            barrier.wait()
            results.append(own.cron_record("report", None, fired(1, 2, 3), JOB,
                                           recorded_by=f"s{n}", now=T0))
        finally:
            own.close()

    threads = [threading.Thread(target=scheduler, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert len(jobs(store)) == 3
    assert [t.status for t in store.cron_history("report")] == [TickStatus.FIRED] * 3


def test_skipped_and_missed_ticks_enqueue_nothing(store: Store) -> None:
    register(store)
    ticks = [TickPlan(T0 + timedelta(minutes=1), TickStatus.MISSED, "misfire=skip"),
             TickPlan(T0 + timedelta(minutes=2), TickStatus.SKIPPED, "paused")]
    assert store.cron_record("report", None, ticks, JOB, recorded_by="s1", now=T0) == []
    assert jobs(store) == []
    history = store.cron_history("report")
    assert [(t.status, t.reason, t.job_id) for t in history] == [
        (TickStatus.SKIPPED, "paused", None), (TickStatus.MISSED, "misfire=skip", None)]


def test_pruning_finished_jobs_keeps_the_ticks(store: Store) -> None:
    register(store)
    [job_id] = store.cron_record("report", None, fired(1), JOB, recorded_by="s1", now=T0) or []
    store.job_discard([job_id])  # as retention would
    store.jobs_prune(succeeded_before=T0 + timedelta(days=30), dead_before=T0 + timedelta(days=30))
    _, [state] = store.cron_states(now=T0)
    assert state.last_tick_at == T0 + timedelta(minutes=1)
    [tick] = store.cron_history("report")
    assert tick.job_id == job_id and tick.outcome is None  # its job is gone; the tick is not
    assert store.cron_record("report", None, fired(1), JOB, recorded_by="s2", now=T0) is None


def test_pause_resume_and_unknown_names(store: Store) -> None:
    register(store)
    assert store.cron_set_paused("report", True, now=T0)
    _, [state] = store.cron_states(now=T0)
    assert state.paused and state.resumed_at is None
    assert store.cron_set_paused("report", False, now=T0 + timedelta(minutes=5))
    _, [state] = store.cron_states(now=T0)
    assert not state.paused and state.resumed_at == T0 + timedelta(minutes=5)
    assert not store.cron_set_paused("nope", True, now=T0)
    assert store.cron_run_now("nope", None, now=T0) is None


def test_run_now_is_a_manual_tick_with_the_stored_job(store: Store) -> None:
    register(store)
    store.cron_set_paused("report", True, now=T0)
    job_id = store.cron_run_now("report", None, now=T0 + timedelta(seconds=30))
    assert job_id is not None
    job = store.job_get(job_id)
    assert job is not None and (job.name, job.queue) == ("tests:report", "crons")
    [tick] = store.cron_history("report")
    assert tick.manual and tick.status is TickStatus.FIRED and tick.job_id == job_id
    # a manual run at a scheduled tick's very instant does not take that tick's place
    store.cron_record("report", None, [TickPlan(T0 + timedelta(seconds=30), TickStatus.FIRED)],
                      JOB, recorded_by="s1", now=T0)
    assert len(store.cron_history("report")) == 2


def test_list_shows_the_latest_run_and_its_outcome(store: Store) -> None:
    register(store)
    register(store, "idle")
    store.cron_record("report", None, fired(1, 2), JOB, recorded_by="s1", now=T0)
    listed = {s.name: s for s in store.cron_list()}
    assert listed["report"].last_run_at == T0 + timedelta(minutes=2)
    assert listed["report"].last_outcome is JobState.READY
    assert listed["idle"].last_run_at is None and listed["idle"].last_job_id is None


def test_history_pages_by_fire_time(store: Store) -> None:
    register(store)
    store.cron_record("report", None, fired(*range(1, 11)), JOB, recorded_by="s1", now=T0)
    first = store.cron_history("report", limit=4)
    assert [t.fire_at for t in first] == [T0 + timedelta(minutes=m) for m in (10, 9, 8, 7)]
    more = store.cron_history("report", limit=4, before=first[-1].fire_at)
    assert [t.fire_at for t in more] == [T0 + timedelta(minutes=m) for m in (6, 5, 4, 3)]

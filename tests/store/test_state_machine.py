"""The Store contract as a state machine: random sequences of store calls on SQLite and PostgreSQL,
each compared with a model of what every job's state, attempt count and attempt rows must be.

Every call passes an explicit ``now`` from a clock the machine moves forward in whole seconds.
``StoreMachine`` drives enqueue, claim, finish (including stale leases), release, cancel, retry
and promote; ``RescueMachine`` adds ``jobs_rescue`` with the supervisor's view of what the dead
worker held. What a rescue must do is written down once, in :func:`expected_rescue`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conveyor.models import AttemptOutcome, JobFilter, JobOutcome, JobRecord, JobState, NewJob
from conveyor.store import Store, open_store
from conveyor.store.sqlite import sqlite_path
from tests.invariants import find_violations

T0 = datetime(2030, 1, 1, tzinfo=UTC)
QUEUES = ("default", "mail")
WORKERS = ("w1", "w2", "w3")
WAITING = {JobState.SCHEDULED, JobState.READY, JobState.FAILED, JobState.BLOCKED}
TABLES = ("conveyor_jobs", "conveyor_attempts", "conveyor_logs", "conveyor_queues",
          "conveyor_processes", "conveyor_leaders", "conveyor_job_dependencies")
RUNS = settings(
    max_examples=60, stateful_step_count=50, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Model:
    """What one job must look like in the store."""

    id: int
    queue: str
    priority: int
    max_attempts: int
    state: JobState
    run_at: datetime
    attempt: int = 0
    lost: int = 0
    lease: str | None = None
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested: bool = False
    rows: list[tuple[int, AttemptOutcome]] = field(default_factory=list)  # (attempt, outcome)
    old_leases: list[str] = field(default_factory=list)

    def ended(self, state: JobState, at: datetime) -> None:
        self.old_leases.append(self.lease or "")
        self.state, self.lease = state, None
        self.finished_at = at if state.finished else None


# --- what a rescue must do -------------------------------------------------------------------
HeldStatus = str  # "waiting" | "running" | "finished", as the dead worker's supervisor saw it
SUSPECT_AT = 2  # lost this many times in a row while running: claimed only with suspects=True
POISON_AFTER = 3  # job_lost's default: dead at this many strikes


def expected_rescue(job: Model, held: Mapping[int, HeldStatus] | None, at: datetime) -> None:
    """The rescue rule, applied to the model of one running job of a rescued worker.

    With ``held`` given, a job missing from it or "waiting" never started: back to ready, its
    attempt not counted, no attempt row. "finished" ran to its end (the result was lost): back
    to ready, attempt not counted, one worker_lost row, lost count unchanged. "running", or
    ``held`` None (nobody knows), was lost while it ran: the same plus lost count + 1. A rescue
    never makes a job dead: lost attempts do not use up the retry budget. A job whose
    cancellation was asked for ends cancelled instead of ready.
    """
    status = "running" if held is None else held.get(job.id, "waiting")
    if status != "waiting":
        job.rows.append((job.attempt, AttemptOutcome.WORKER_LOST))
    if status == "running":
        job.lost += 1
    job.attempt -= 1
    job.ended(JobState.CANCELLED if job.cancel_requested else JobState.READY, at)
    job.run_at = at


def claimable(job: Model, suspects: bool) -> bool:
    """Which ready jobs a claim may take: suspects (lost SUSPECT_AT times in a row) only when
    asked for, to run alone; ordinary jobs only when not."""
    return (job.lost >= SUSPECT_AT) == suspects


def expected_lost(job: Model, at: datetime) -> None:
    """``job_lost``: the job killed the process it ran in alone; one more strike, a worker_lost
    row, dead at POISON_AFTER strikes (the attempt then counted), else ready (not counted)."""
    job.rows.append((job.attempt, AttemptOutcome.WORKER_LOST))
    job.lost += 1
    if job.lost >= POISON_AFTER:
        job.ended(JobState.DEAD, at)
    else:
        job.attempt -= 1
        job.ended(JobState.READY, at)
    job.run_at = at


# --- the machine -----------------------------------------------------------------------------
def reset(store: Store) -> None:
    """Empty every table (the schema stays)."""
    if store.url.startswith("sqlite"):
        with sqlite3.connect(sqlite_path(store.url)) as conn:
            for table in TABLES:
                conn.execute(f"DELETE FROM {table}")
        return
    import psycopg

    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY")


class StoreMachine(RuleBasedStateMachine):
    store: Store  # set by the test, one per backend

    def __init__(self) -> None:
        super().__init__()
        reset(self.store)
        self.now = T0
        self.jobs: dict[int, Model] = {}

    # helpers
    def pick(self, index: int, states: set[JobState] | None = None) -> Model | None:
        found = [j for j in self.jobs.values() if states is None or j.state in states]
        return found[index % len(found)] if found else None

    def running(self) -> list[Model]:
        return [j for j in self.jobs.values() if j.state is JobState.RUNNING]

    def outcome(self, job: Model, state: JobState, how: AttemptOutcome,
                lease: str | None = None, retry_at: datetime | None = None) -> JobOutcome:
        assert job.started_at is not None
        return JobOutcome(
            job_id=job.id, lease=lease or job.lease or "", attempt=job.attempt,
            worker_id=job.worker or "", started_at=job.started_at, state=state, outcome=how,
            error_class=None if how is AttemptOutcome.SUCCEEDED else "Boom",
            retry_at=retry_at, finished_at=self.now,
        )

    def settle(self, job: Model, o: JobOutcome) -> None:
        """The model of an accepted outcome. One that ended on its own while a cancellation it
        never heard of was pending finished anyway; a failed one is then cancelled."""
        unheard = job.cancel_requested and o.outcome is not AttemptOutcome.CANCELLED
        if o.state is not JobState.SUCCEEDED or unheard:
            job.rows.append((job.attempt, AttemptOutcome.FINISHED_ANYWAY if unheard else o.outcome))
        job.lost = 0
        cancelled = unheard and o.state is JobState.FAILED
        job.ended(JobState.CANCELLED if cancelled else o.state, self.now)
        if o.retry_at is not None and not cancelled:
            job.run_at = o.retry_at

    @initialize()
    def start(self) -> None:
        assert self.store.job_list(JobFilter()) == []

    # rules
    @rule(seconds=st.sampled_from([1, 2, 5, 30, 120]))
    def clock_moves(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(
        queue=st.sampled_from(QUEUES), priority=st.integers(0, 2), max_attempts=st.integers(1, 3),
        delay=st.one_of(st.none(), st.sampled_from([-10, 0, 10, 60])), count=st.integers(1, 3),
    )
    def enqueue(self, queue: str, priority: int, max_attempts: int, delay: int | None,
                count: int) -> None:
        if len(self.jobs) >= 12:
            return
        run_at = None if delay is None else self.now + timedelta(seconds=delay)
        new = [NewJob("sm:job", queue=queue, priority=priority, max_attempts=max_attempts,
                      run_at=run_at) for _ in range(count)]
        ids = [i.id for i in self.store.job_insert_many(new, now=self.now)]
        assert len(ids) == count and ids == sorted(ids)
        for job_id in ids:
            due = run_at is None or run_at <= self.now
            self.jobs[job_id] = Model(
                job_id, queue, priority, max_attempts,
                JobState.READY if due else JobState.SCHEDULED, run_at or self.now)

    @rule(worker=st.sampled_from(WORKERS), queue=st.sampled_from(QUEUES), limit=st.integers(1, 3))
    def claim(self, worker: str, queue: str, limit: int) -> None:
        self.claim_as(worker, queue, limit, self.store.job_claim(worker, queue, limit, now=self.now))

    def claim_as(self, worker: str, queue: str, limit: int, claimed: list[JobRecord],
                 suspects: bool = False) -> None:
        ready = sorted((j for j in self.jobs.values() if j.state is JobState.READY
                        and j.queue == queue and claimable(j, suspects)),
                       key=lambda j: (-j.priority, j.id))
        expected = ready[:limit]
        assert [c.id for c in claimed] == [j.id for j in expected]
        for job, record in zip(expected, claimed, strict=True):  # one lease per claim
            assert record.lease and record.lease not in job.old_leases, "a lease is never reused"
            job.state, job.lease, job.worker = JobState.RUNNING, record.lease, worker
            job.attempt += 1
            job.started_at, job.finished_at = self.now, None

    @rule(index=st.integers(0, 99), how=st.sampled_from(["succeeded", "failed", "dead", "cancelled"]),
          retry_in=st.sampled_from([0, 5, 60]), repeat=st.booleans())
    def finish(self, index: int, how: str, retry_in: int, repeat: bool) -> None:
        if not self.running():  # claim one first: finishing is what most claims lead to
            for queue in QUEUES:
                self.claim("w1", queue, 1)
        running = self.running()
        if not running:
            return
        job = running[index % len(running)]
        o = {
            "succeeded": lambda: self.outcome(job, JobState.SUCCEEDED, AttemptOutcome.SUCCEEDED),
            "failed": lambda: self.outcome(job, JobState.FAILED, AttemptOutcome.ERROR,
                                           retry_at=self.now + timedelta(seconds=retry_in)),
            "dead": lambda: self.outcome(job, JobState.DEAD, AttemptOutcome.TIMEOUT),
            "cancelled": lambda: self.outcome(job, JobState.CANCELLED, AttemptOutcome.CANCELLED),
        }[how]()
        batch = [o, o] if repeat else [o]  # the same outcome twice: only the first lands
        assert self.store.job_finish_many(batch, now=self.now) == [True, False][: len(batch)]
        self.settle(job, o)

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 99), forged=st.booleans())
    def finish_with_a_stale_lease(self, index: int, forged: bool) -> None:
        job = self.pick(index)
        assert job is not None
        lease = "forged" if forged or not job.old_leases else job.old_leases[-1]
        o = JobOutcome(job_id=job.id, lease=lease, attempt=job.attempt, worker_id="w1",
                       started_at=job.started_at or self.now, state=JobState.SUCCEEDED,
                       outcome=AttemptOutcome.SUCCEEDED, finished_at=self.now)
        assert self.store.job_finish_many([o], now=self.now) == [False]

    @precondition(lambda self: self.running())
    @rule(index=st.integers(0, 99), how_many=st.integers(1, 3), with_stale=st.booleans())
    def release(self, index: int, how_many: int, with_stale: bool) -> None:
        running = self.running()
        chosen = [running[(index + k) % len(running)] for k in range(min(how_many, len(running)))]
        leases = [(j.id, j.lease or "") for j in chosen]
        stale = [(j.id, j.old_leases[-1]) for j in self.jobs.values() if j.old_leases][:1]
        assert self.store.job_release(leases + (stale if with_stale else []), now=self.now) == len(
            chosen)
        for job in chosen:
            job.rows.append((job.attempt, AttemptOutcome.SHUTDOWN))
            job.attempt -= 1
            job.ended(JobState.CANCELLED if job.cancel_requested else JobState.READY, self.now)
            job.run_at = self.now

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 99))
    def cancel(self, index: int) -> None:
        job = self.pick(index)
        assert job is not None
        if job.state in WAITING:
            job.state, job.finished_at = JobState.CANCELLED, self.now
        elif job.state is JobState.RUNNING:
            job.cancel_requested = True
        assert self.store.job_cancel(job.id, now=self.now) is job.state

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 99))
    def retry(self, index: int) -> None:
        job = self.pick(index)
        assert job is not None
        retried = job.state in (JobState.DEAD, JobState.CANCELLED, JobState.FAILED)
        assert self.store.job_retry([job.id], now=self.now) == int(retried)
        if retried:
            job.state, job.run_at, job.finished_at = JobState.READY, self.now, None
            job.max_attempts = max(job.max_attempts, job.attempt + 1)
            job.cancel_requested, job.lost = False, 0

    @rule()
    def promote(self) -> None:
        due = [j for j in self.jobs.values()
               if j.state in (JobState.SCHEDULED, JobState.FAILED) and j.run_at <= self.now]
        assert self.store.jobs_promote(now=self.now) == len(due)
        for job in due:
            job.state = JobState.READY

    # invariants
    @invariant()
    def store_matches_model(self) -> None:
        found = {j.id: j for j in self.store.job_list(JobFilter(limit=1000))}
        assert sorted(found) == sorted(self.jobs)
        for job_id, m in self.jobs.items():
            got = found[job_id]
            where = f"job {job_id}"
            assert (got.state, got.attempt, got.lost_count, got.max_attempts) == (
                m.state, m.attempt, m.lost, m.max_attempts), where
            assert got.lease == m.lease, where
            assert got.cancel_requested == m.cancel_requested, where
            if m.state in WAITING:
                assert got.run_at == m.run_at, where
            if m.state is JobState.RUNNING:
                assert (got.worker_id, got.started_at) == (m.worker, m.started_at), where
            assert got.finished_at == m.finished_at, where
            rows = [(a.attempt, a.outcome) for a in self.store.job_attempts(job_id)]
            anyway = (m.attempt, AttemptOutcome.FINISHED_ANYWAY) in m.rows
            success = [(m.attempt, AttemptOutcome.SUCCEEDED)] if (
                m.state is JobState.SUCCEEDED and not anyway) else []
            assert rows == m.rows + success, where

    def teardown(self) -> None:
        problems = find_violations(self.store, workers_stopped=False, stale_after=1e9, now=self.now)
        assert problems == []


class RescueMachine(StoreMachine):
    """The same machine with workers presumed dead and rescued."""

    @precondition(lambda self: self.running())
    @rule(
        workers=st.sets(st.sampled_from(WORKERS), min_size=1, max_size=2),
        told=st.booleans(),
        views=st.lists(st.sampled_from(["waiting", "running", "finished", None]), min_size=12,
                       max_size=12),
    )
    def rescue(self, workers: set[str], told: bool, views: list[str | None]) -> None:
        lost = sorted((j for j in self.running() if j.worker in workers), key=lambda j: j.id)
        from conveyor.models import Held  # type: ignore[attr-defined, unused-ignore]

        held: dict[int, HeldStatus] | None = None
        if told:  # None in views: the supervisor never heard of that job
            held = {j.id: Held(view) for j, view in zip(lost, views, strict=False)
                    if view is not None}
        rescued = self.store.jobs_rescue(sorted(workers), "worker lost", held=held,  # type: ignore[call-arg]
                                         now=self.now)
        assert sorted(rescued) == [j.id for j in lost]
        for job in lost:
            expected_rescue(job, held, self.now)

    @rule(worker=st.sampled_from(WORKERS), queue=st.sampled_from(QUEUES), limit=st.integers(1, 3),
          suspects=st.booleans())
    def claim_suspects_or_not(self, worker: str, queue: str, limit: int, suspects: bool) -> None:
        claimed = self.store.job_claim(worker, queue, limit, suspects=suspects,  # type: ignore[call-arg]
                                       now=self.now)
        self.claim_as(worker, queue, limit, claimed, suspects)

    @precondition(lambda self: self.running())
    @rule(index=st.integers(0, 99), stale=st.booleans())
    def killed_its_process_alone(self, index: int, stale: bool) -> None:
        running = self.running()
        job = running[index % len(running)]
        lease = (job.old_leases[-1] if job.old_leases else "forged") if stale else job.lease or ""
        state = self.store.job_lost(job.id, lease, "killed its process",  # type: ignore[attr-defined]
                                    now=self.now)
        if stale:
            assert state is None, "a stale lease changes nothing"
            return
        expected_lost(job, self.now)
        assert state is job.state


@pytest.fixture
def machine_store(store_url: str) -> Iterator[Store]:
    store = open_store(store_url)
    yield store
    store.close()


def _run(machine: type[StoreMachine], store: Store) -> None:
    class OnThisStore(machine):  # type: ignore[valid-type, misc]
        pass

    OnThisStore.store = store
    run_state_machine_as_test(OnThisStore, settings=RUNS)


def test_store_calls_in_any_order_keep_every_job_as_the_model_says(machine_store: Store) -> None:
    _run(StoreMachine, machine_store)


def test_rescues_return_jobs_as_the_supervisor_saw_them(machine_store: Store) -> None:
    _run(RescueMachine, machine_store)

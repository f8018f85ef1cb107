"""Invariants every store must keep, whatever ran against it: checked through the Store API only.

``check_invariants(store_or_url)`` raises AssertionError listing every violation of:

1. no job has two attempts whose run times overlap (the current attempt of a running job, which
   has no attempt row yet, is the job row itself: from its ``started_at``, open-ended);
2. every attempt has an outcome, and a ``finished_at`` no earlier than its start (only the
   current attempt of a running job may be unfinished);
3. nothing is ``running`` without a live claim: with ``workers_stopped=True`` (the caller has
   stopped every worker) no job may be running at all; otherwise a running job's worker must be a
   registered process that heartbeated within ``stale_after`` seconds (an unregistered worker is
   judged by the job's own heartbeat), which leaves a dead worker's jobs that long to be rescued;
4. nothing is ``dead`` that never ran: a dead job has at least one attempt that ran, i.e. one whose
   outcome is not ``shutdown`` (a job handed back unstarted has no attempt row, or a shutdown one);
5. no concurrency key has more jobs holding a slot (ready or running) than its max.

``find_violations`` returns the same list without raising, for callers that count them.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from typing import NamedTuple

from conveyor.models import AttemptOutcome, AttemptRecord, JobFilter, JobRecord, JobState
from conveyor.store import Store, open_store

PAGE = 1000
OPEN = datetime.max.replace(tzinfo=UTC)
NEVER_RAN = frozenset({AttemptOutcome.SHUTDOWN})  # attempts handed back before the job ran


class Interval(NamedTuple):
    start: datetime
    end: datetime | None  # None: still running
    label: str


def check_invariants(
    store_or_url: Store | str, *, workers_stopped: bool = True, stale_after: float = 60.0,
    now: datetime | None = None, job_ids: Collection[int] | None = None,
) -> None:
    """Raise AssertionError with one line per violated invariant (see the module docstring).
    ``job_ids`` limits the per-job rules to those jobs (the running-job rule looks at all)."""
    problems = find_violations(
        store_or_url, workers_stopped=workers_stopped, stale_after=stale_after, now=now,
        job_ids=job_ids,
    )
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise AssertionError(f"{len(problems)} invariant violation(s):\n{shown}{more}")


def find_violations(
    store_or_url: Store | str, *, workers_stopped: bool = True, stale_after: float = 60.0,
    now: datetime | None = None, job_ids: Collection[int] | None = None,
) -> list[str]:
    store = open_store(store_or_url) if isinstance(store_or_url, str) else store_or_url
    try:
        return _violations(store, workers_stopped, stale_after, now, job_ids)
    finally:
        if isinstance(store_or_url, str):
            store.close()


def _violations(
    store: Store, workers_stopped: bool, stale_after: float, now: datetime | None,
    job_ids: Collection[int] | None,
) -> list[str]:
    problems: list[str] = []
    for job in _all_jobs(store) if job_ids is None else _some_jobs(store, job_ids):
        snapshot = _consistent(store, job)
        if snapshot is None:  # changed under us on every read: a live system, judged next time
            continue
        job, attempts = snapshot
        problems += [f"{_name(job)}: {p}" for p in _attempt_problems(job, attempts)]
        if job.state is JobState.DEAD and all(a.outcome in NEVER_RAN for a in attempts):
            outcomes = ", ".join(a.outcome for a in attempts) or "no attempts"
            problems.append(f"{_name(job)}: dead but never ran ({outcomes}); error: {job.error}")
    problems += _unclaimed_running(store, workers_stopped, stale_after, now)
    problems += [f"concurrency key {u.key!r}: {u.admitted} jobs hold a slot, max {u.max}"
                 for u in store.limit_usage() if u.admitted > u.max]
    return problems


def _all_jobs(store: Store) -> Iterator[JobRecord]:
    before: int | None = None
    while True:
        page = store.job_list(JobFilter(limit=PAGE, before_id=before))
        yield from page
        if len(page) < PAGE:
            return
        before = page[-1].id


def _some_jobs(store: Store, job_ids: Collection[int]) -> Iterator[JobRecord]:
    ids = sorted(job_ids)
    for first in range(0, len(ids), 500):
        chunk = tuple(ids[first:first + 500])
        yield from store.job_list(JobFilter(ids=chunk, limit=len(chunk)))


def _same(a: JobRecord | None, b: JobRecord) -> bool:
    return a is not None and (a.state, a.attempt, a.lease, a.started_at, a.finished_at) == (
        b.state, b.attempt, b.lease, b.started_at, b.finished_at)


def _consistent(store: Store, job: JobRecord) -> tuple[JobRecord, list[AttemptRecord]] | None:
    """The job's attempts with a job row read on both sides of them, unchanged in between."""
    for _ in range(5):
        attempts = store.job_attempts(job.id)
        after = store.job_get(job.id)
        if after is None:  # discarded or pruned meanwhile
            return None
        if _same(after, job):
            return job, attempts
        job = after
    return None


def _name(job: JobRecord) -> str:
    return f"job {job.id} {job.name} ({job.state}, attempt {job.attempt})"


def _attempt_problems(job: JobRecord, attempts: list[AttemptRecord]) -> list[str]:
    problems: list[str] = []
    spans: list[Interval] = []
    current_listed = False
    for a in attempts:
        label = f"attempt {a.attempt} {a.outcome} on {a.worker_id}"
        if not isinstance(a.outcome, AttemptOutcome):
            problems.append(f"attempt {a.attempt} on {a.worker_id} has no outcome ({a.outcome!r})")
        if a.finished_at is None:
            current = (job.state is JobState.RUNNING and a.started_at == job.started_at
                       and a.attempt == job.attempt)
            if not current:
                problems.append(f"{label} started {_t(a.started_at)} and never finished")
            current_listed = current_listed or current
        elif a.finished_at < a.started_at:
            problems.append(f"{label} ended {_t(a.finished_at)} before it started {_t(a.started_at)}")
        spans.append(Interval(a.started_at, a.finished_at, label))
    if job.state is JobState.RUNNING and not current_listed:
        if job.started_at is None:
            problems.append("running without a start time")
        else:
            spans.append(Interval(job.started_at, None, f"current attempt on {job.worker_id}"))
    spans.sort(key=lambda s: (s.start, s.end or OPEN))  # an empty span first among equal starts
    reach: Interval | None = None  # the span seen so far that ends last
    for span in spans:
        if reach is not None and span.start < (reach.end or OPEN):
            problems.append(
                f"overlapping attempts: {reach.label} {_t(reach.start)}-{_t(reach.end)}"
                f" and {span.label} {_t(span.start)}-{_t(span.end)}"
            )
        if reach is None or (span.end or OPEN) > (reach.end or OPEN):
            reach = span
    return problems


def _unclaimed_running(
    store: Store, workers_stopped: bool, stale_after: float, now: datetime | None
) -> list[str]:
    running = list(_running(store))
    if not running:
        return []
    processes = {p.id: p for p in store.process_list()}
    at = (now or datetime.now(UTC)).timestamp()
    problems = []
    for job in running:
        worker = processes.get(job.worker_id or "")
        if worker is None:
            seen = job.heartbeat_at or job.started_at
            where = f"worker {job.worker_id} is not registered"
        else:
            seen = worker.heartbeat_at
            where = f"worker {job.worker_id} (pid {worker.pid}) is registered"
        silent = at - seen.timestamp() if seen else float("inf")
        if workers_stopped:
            problems.append(
                f"{_name(job)}: running after every worker stopped; {where},"
                f" last heartbeat {silent:.1f}s ago; nobody rescued it"
            )
        elif silent > stale_after and _same(store.job_get(job.id), job):  # still held, unrescued
            problems.append(
                f"{_name(job)}: running without a live claim; {where},"
                f" silent for {silent:.1f}s (> {stale_after:g}s) and not rescued"
            )
    return problems


def _running(store: Store) -> Iterator[JobRecord]:
    before: int | None = None
    while True:
        page = store.job_list(JobFilter(states=(JobState.RUNNING,), limit=PAGE, before_id=before))
        yield from page
        if len(page) < PAGE:
            return
        before = page[-1].id


def _t(when: datetime | None) -> str:
    if when is None:
        return "(open)"
    return when.astimezone(UTC).strftime("%H:%M:%S.%f")[:-3]


if __name__ == "__main__":  # python -m tests.invariants URL
    import sys

    started = time.monotonic()
    check_invariants(sys.argv[1], workers_stopped="--live" not in sys.argv)
    print(f"invariants hold ({time.monotonic() - started:.2f}s)")

"""Claiming and finishing attempts on SQLite: the two writes every job goes through."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from ...models import AttemptOutcome, JobOutcome, JobRecord, JobState
from .. import shared
from . import statements as sql
from .flow import settle
from .rates import admit


def ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def claim(
    conn: sqlite3.Connection, worker_id: str, queue: str, limit: int, at: float,
    statement: str = sql.CLAIM,
) -> list[JobRecord]:
    rows = conn.execute(
        statement, (worker_id, shared.new_lease(), at, at, queue, limit, queue)
    ).fetchall()
    jobs = shared.claimed(rows, dt)
    if any(j.rate_key is not None for j in jobs):
        return admit(conn, jobs, at)
    return jobs


def _unheard(conn: sqlite3.Connection, o: JobOutcome, at: float) -> AttemptOutcome:
    """The attempt outcome of a job whose cancellation was pending as it finished: its own if
    the request had reached it, else ``finished_anyway`` (and a failed one is cancelled)."""
    if o.outcome in (AttemptOutcome.CANCELLED, AttemptOutcome.CANCEL_FORCED):
        return o.outcome
    if o.state is JobState.FAILED:
        conn.execute(sql.CANCEL_FAILED, (at, o.job_id))
    return AttemptOutcome.FINISHED_ANYWAY


def finish(conn: sqlite3.Connection, outcomes: Sequence[JobOutcome], at: float) -> list[bool]:
    accepted, freed = [], []
    for o in outcomes:
        finished = ts(o.finished_at) or at
        row = conn.execute(sql.FINISH, (
            str(o.state), o.result, o.error_summary,
            finished if o.state.finished else None, ts(o.retry_at), o.job_id, o.lease,
        )).fetchone()
        ok = row is not None
        if ok and row[0] is not None:  # a concurrency slot given back
            freed.append(row[0])
        how = _unheard(conn, o, finished) if ok and row[1] else o.outcome
        if ok and (o.state is not JobState.SUCCEEDED or how is not o.outcome):
            conn.execute(sql.RECORD_ATTEMPT, (  # a plain success is the job row itself
                o.job_id, o.attempt, o.worker_id, o.started_at.timestamp(), finished,
                str(how), o.error_class, o.error_message, o.traceback,
            ))
        accepted.append(ok)
    if freed:
        settle(conn, freed, at)
    return accepted

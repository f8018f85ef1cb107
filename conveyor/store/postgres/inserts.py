"""Writing new jobs: one statement for a few, COPY with ids drawn first for many, and, when any
job has a unique key, an insert that skips keys held by unfinished jobs and reports their ids."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import sql as pgsql

from ...errors import StoreError
from ...models import Inserted, NewJob
from .. import shared
from . import flow
from . import statements as sql
from .connections import Conn
from .copy import copy_rows

COPY_THRESHOLD = 64  # from this many jobs on, COPY beats one multi-row INSERT
KEY_ROUNDS = 3  # times a job is offered again whose key's holder finished as it was looked up


def insert_jobs(conn: Conn, jobs: Sequence[NewJob], now: datetime | None) -> list[Inserted]:
    """Insert ``jobs`` on ``conn`` (the caller runs it in one transaction when it takes more
    than one statement: many jobs, or unique keys); what became of each, in order."""
    if any(j.unique_key is not None for j in jobs):
        if not any(j.unique_for is not None for j in jobs):
            return _insert_unless_held(conn, jobs, now)
        return _insert_unless_locked(conn, jobs, now)
    if len(jobs) == 1:
        return [Inserted(_insert_one(conn, jobs[0], now), True)]
    if len(jobs) >= COPY_THRESHOLD:
        return [Inserted(i, True) for i in _copy(conn, jobs, now)]
    rows = conn.execute(sql.INSERT_JOBS, _arrays(jobs, now)).fetchall()
    return [Inserted(r[0], True) for r in rows]


def _insert_one(conn: Conn, j: NewJob, now: datetime | None) -> int:
    params: dict[str, Any] = {
        "now": now, "name": j.name, "queue": j.queue, "priority": int(j.priority),
        "args": j.args, "kwargs": j.kwargs, "max_attempts": int(j.max_attempts),
        "timeout": j.timeout, "run_at": j.run_at, "unique_key": j.unique_key,
        "concurrency_key": j.concurrency_key, "concurrency_max": j.concurrency_max,
        "unique_started": j.unique_started, "rate_key": j.rate_key, "rate_count": j.rate_count,
        "rate_period": j.rate_period, "sensitive": shared.sensitive_text(j),
    }
    row = conn.execute(sql.INSERT_ONE, params).fetchone()
    assert row is not None
    return int(row[0])


def _arrays(jobs: Sequence[NewJob], now: datetime | None) -> dict[str, Any]:
    return {
        "now": now,
        "name": [j.name for j in jobs], "queue": [j.queue for j in jobs],
        "priority": [int(j.priority) for j in jobs], "args": [j.args for j in jobs],
        "kwargs": [j.kwargs for j in jobs],
        "max_attempts": [int(j.max_attempts) for j in jobs],
        "timeout": [None if j.timeout is None else float(j.timeout) for j in jobs],
        "run_at": [j.run_at for j in jobs], "unique_key": [j.unique_key for j in jobs],
        "concurrency_key": [j.concurrency_key for j in jobs],
        "concurrency_max": [j.concurrency_max for j in jobs],
        "unique_started": [j.unique_started for j in jobs],
        "rate_key": [j.rate_key for j in jobs], "rate_count": [j.rate_count for j in jobs],
        "rate_period": [j.rate_period for j in jobs],
        "sensitive": [shared.sensitive_text(j) for j in jobs],
    }


def _insert_unless_held(conn: Conn, jobs: Sequence[NewJob], now: datetime | None) -> list[Inserted]:
    """Insert, skipping jobs whose key an unfinished job holds (perhaps one earlier in this
    batch), then look the holders up in a statement of their own, which sees what others
    committed meanwhile. A job whose holder finished in between is offered again."""
    out: list[Inserted | None] = [None] * len(jobs)
    pending = list(range(len(jobs)))
    for _ in range(KEY_ROUNDS):
        rows = conn.execute(sql.INSERT_JOBS_UNLESS_HELD, _arrays([jobs[i] for i in pending], now))
        collided = []
        for i, (job_id, created, *_) in zip(pending, rows.fetchall(), strict=True):
            if created:
                out[i] = Inserted(int(job_id), True)
            else:
                collided.append(i)
        keys = sorted({key for i in collided if (key := jobs[i].unique_key) is not None})
        holders = dict(conn.execute(sql.HOLDERS_OF_KEYS, (keys,)).fetchall()) if keys else {}
        pending = []
        for i in collided:
            holder = holders.get(jobs[i].unique_key)
            if holder is None:
                pending.append(i)
            else:
                out[i] = Inserted(int(holder), False)
        if not pending:
            return [x for x in out if x is not None]
    raise StoreError(
        f"job {jobs[pending[0]].name!r} with unique key {jobs[pending[0]].unique_key!r} was"
        f" neither inserted nor held by another job after {KEY_ROUNDS} tries"
    )


def _insert_unless_locked(
    conn: Conn, jobs: Sequence[NewJob], now: datetime | None
) -> list[Inserted]:
    """Jobs some of which keep their key for ``unique_for`` after enqueue: each such key is
    locked first (an unexpired lock reports its job), then the rest go through
    ``_insert_unless_held``; a lock whose job was not created (an unfinished job held the key)
    is dropped again, all in the caller's one transaction."""
    first: dict[str, int] = {}
    for i, j in enumerate(jobs):
        if j.unique_key is not None and j.unique_for is not None:
            first.setdefault(j.unique_key, i)
    keys = list(first)
    conn.execute(flow.LOCKS_EXPIRE, {"keys": keys, "now": now})
    secs = [jobs[first[k]].unique_for for k in keys]
    taken = {r[0] for r in conn.execute(flow.LOCKS_TAKE, {"keys": keys, "secs": secs, "now": now})}
    held = dict(conn.execute(flow.LOCKS_HELD, {"keys": [k for k in keys if k not in taken]}))
    out: list[Inserted | None] = [None] * len(jobs)
    for i, j in enumerate(jobs):
        holder = held.get(j.unique_key) if j.unique_for is not None else None
        if holder is not None:
            out[i] = Inserted(int(holder), False)
    rest = [i for i, x in enumerate(out) if x is None]
    for i, done in zip(rest, _insert_unless_held(conn, [jobs[i] for i in rest], now), strict=True):
        out[i] = done
    mine = [k for k in keys if k in taken]
    created = [k for k in mine if (got := out[first[k]]) is not None and got.created]
    ids = [out[first[k]].id for k in created]  # type: ignore[union-attr]
    conn.execute(flow.LOCKS_GIVE, {"keys": created, "ids": ids})
    conn.execute(flow.LOCKS_DROP, {"keys": [k for k in mine if k not in created]})
    return [x for x in out if x is not None]


def _copy(conn: Conn, jobs: Sequence[NewJob], now: datetime | None) -> list[int]:
    """Many jobs, none with a unique key: draw their ids first (in order), then stream the
    rows with COPY. Every row is inserted or the whole batch fails."""
    row = conn.execute(sql.ID_SEQUENCE, (now,)).fetchone()
    assert row is not None
    sequence, at = row
    query = pgsql.SQL(sql.NEXT_IDS).format(pgsql.Literal(sequence))
    drawn = conn.execute(query, (len(jobs),)).fetchone()
    assert drawn is not None
    ids = sorted(map(int, drawn[0].split(",")))
    text, ready = copy_rows(ids, jobs, at)
    statement = sql.COPY_JOBS_PLAIN if shared.plain(jobs) else sql.COPY_JOBS
    with conn.cursor().copy(statement) as copy:
        copy.write(text)
    conn.execute(sql.WAKE if ready else sql.CHANGED)
    return ids

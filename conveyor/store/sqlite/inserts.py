"""Writing new jobs to SQLite: one executemany when no job has a unique key, else row by row,
skipping a job whose key an unfinished job holds and reporting that job's id instead."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...errors import StoreError
from ...models import Inserted, NewJob
from .. import shared
from . import statements as sql
from .flow import lock_holder, take_lock

Row = tuple[Any, ...]


def insert_rows(jobs: Sequence[NewJob], at: float) -> list[Row]:
    if shared.plain(jobs):  # the columns INSERT_PLAIN names
        return [
            (
                j.name, j.queue, j.priority,
                "ready" if j.run_at is None or j.run_at.timestamp() <= at else "scheduled",
                j.args, j.kwargs, j.max_attempts, j.timeout,
                at if j.run_at is None else j.run_at.timestamp(), at, None, None,
            )
            for j in jobs
        ]
    return [
        (
            j.name, j.queue, j.priority,
            shared.state_on_insert(j, j.run_at is None or j.run_at.timestamp() <= at),
            j.args, j.kwargs, j.max_attempts, j.timeout,
            at if j.run_at is None else j.run_at.timestamp(), at, j.unique_key,
            j.concurrency_key, j.concurrency_max, int(j.unique_started), j.rate_key, j.rate_count,
            j.rate_period, shared.sensitive_text(j),
        )
        for j in jobs
    ]


def insert_without_keys(conn: sqlite3.Connection, rows: list[Row]) -> list[Inserted]:
    """No unique keys: every row is inserted, in one statement."""
    if not rows:
        return []
    conn.executemany(sql.INSERT_PLAIN if len(rows[0]) == sql.PLAIN_WIDTH else sql.INSERT, rows)
    # the write lock is held, so AUTOINCREMENT ids of this statement are consecutive
    last = conn.execute(sql.LAST_ID).fetchone()[0]
    return [Inserted(i, True) for i in range(last - len(rows) + 1, last + 1)]


def insert_unless_held(
    conn: sqlite3.Connection, rows: list[Row], jobs: Sequence[NewJob] = (), at: float = 0.0
) -> list[Inserted]:
    """Row by row: a job whose key an unfinished job holds (perhaps one earlier in this batch),
    or (given ``jobs``, the rows' own) a ``unique_for`` lock that has not expired at ``at``, is
    not inserted, and reports that job. The write lock keeps the holder from changing."""
    out = []
    for n, row in enumerate(rows):
        key, keep = row[10], jobs[n].unique_for if jobs else None
        locked = None if key is None or keep is None else lock_holder(conn, key, at)
        if locked is not None:
            out.append(Inserted(locked, False))
            continue
        created = conn.execute(sql.INSERT_UNLESS_HELD, row).fetchone()
        if created is not None:
            out.append(Inserted(created[0], True))
            if key is not None and keep is not None:
                take_lock(conn, key, created[0], at + keep)
            continue
        holder = conn.execute(sql.HOLDER_OF_KEY, (key,)).fetchone()
        if holder is None:  # a conflict the unique index did not report: not ours to guess
            raise StoreError(f"job {row[0]!r} was not inserted and no job holds its unique key")
        out.append(Inserted(holder[0], False))
    return out

"""Writing new jobs to SQLite: one executemany when no job has a unique key, else row by row,
skipping a job whose key an unfinished job holds and reporting that job's id instead."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...errors import StoreError
from ...models import Inserted, NewJob
from . import statements as sql

Row = tuple[Any, ...]


def insert_rows(jobs: Sequence[NewJob], at: float) -> list[Row]:
    return [
        (
            j.name, j.queue, j.priority,
            "ready" if j.run_at is None or j.run_at.timestamp() <= at else "scheduled",
            j.args, j.kwargs, j.max_attempts, j.timeout,
            at if j.run_at is None else j.run_at.timestamp(), at, j.unique_key,
            j.concurrency_key,
        )
        for j in jobs
    ]


def insert_without_keys(conn: sqlite3.Connection, rows: list[Row]) -> list[Inserted]:
    """No unique keys: every row is inserted, in one statement."""
    if not rows:
        return []
    conn.executemany(sql.INSERT, rows)
    # the write lock is held, so AUTOINCREMENT ids of this statement are consecutive
    last = conn.execute(sql.LAST_ID).fetchone()[0]
    return [Inserted(i, True) for i in range(last - len(rows) + 1, last + 1)]


def insert_unless_held(conn: sqlite3.Connection, rows: list[Row]) -> list[Inserted]:
    """Row by row: a job whose key an unfinished job holds (perhaps one earlier in this batch)
    is not inserted, and reports that job. The write lock keeps the holder from changing."""
    out = []
    for row in rows:
        created = conn.execute(sql.INSERT_UNLESS_HELD, row).fetchone()
        if created is not None:
            out.append(Inserted(created[0], True))
            continue
        holder = conn.execute(sql.HOLDER_OF_KEY, (row[10],)).fetchone()
        if holder is None:  # a conflict the unique index did not report: not ours to guess
            raise StoreError(f"job {row[0]!r} was not inserted and no job holds its unique key")
        out.append(Inserted(holder[0], False))
    return out

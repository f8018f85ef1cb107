"""The stores' own limits: a minimal claim-and-complete loop with no job system around it.

PostgreSQL: 2 client processes (psycopg, autocommit), each looping
    claim:    UPDATE jobs SET state='running', claimed_at=now() WHERE id IN (SELECT id FROM jobs
              WHERE state='ready' ORDER BY id LIMIT <batch> FOR UPDATE SKIP LOCKED) RETURNING id, arg
    complete: UPDATE jobs SET state='done', finished_at=now() WHERE id = ANY(<claimed ids>)
SQLite (WAL, synchronous=NORMAL, as conveyor sets it): 1 process, the same two statements, each in
its own BEGIN IMMEDIATE transaction (SQLite has one writer at a time anyway). The claim names the
partial index: with statistics saying "every row is ready", SQLite's planner otherwise scans the
table from the start, past every row already done, and the loop slows as it goes.
n rows are inserted first (not timed); the figure is rows claimed and completed per second.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import tempfile
import time

from bench.peers import common

STORE = "postgres / sqlite"
PACKAGES = ("psycopg", "psycopg-binary")
PG_CLIENTS = 2

SCHEMA_PG = """
CREATE TABLE jobs (id bigserial PRIMARY KEY, arg int NOT NULL, state text NOT NULL DEFAULT 'ready',
                   claimed_at timestamptz, finished_at timestamptz);
CREATE INDEX jobs_ready ON jobs (id) WHERE state = 'ready';
"""
CLAIM_PG = """UPDATE jobs SET state = 'running', claimed_at = now() WHERE id IN (
    SELECT id FROM jobs WHERE state = 'ready' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)
RETURNING id, arg"""
COMPLETE_PG = "UPDATE jobs SET state = 'done', finished_at = now() WHERE id = ANY(%s)"


def _pg_loop(batch: int, deadline: float, done: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    import psycopg

    count = 0
    with psycopg.connect(common.PG_URL, autocommit=True) as conn:
        while time.time() < deadline:
            rows = conn.execute(CLAIM_PG, (batch,)).fetchall()
            if not rows:
                break
            conn.execute(COMPLETE_PG, ([r[0] for r in rows],))
            count += len(rows)
    with done.get_lock():
        done.value += count


def postgres(n: int, batch: int) -> float:
    import psycopg

    with common.fresh_pg() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA_PG)
        conn.execute("INSERT INTO jobs (arg) SELECT g FROM generate_series(1, %s) g", (n,))
        conn.execute("VACUUM ANALYZE jobs")
        done = multiprocessing.Value("q", 0)
        start = time.perf_counter()
        deadline = time.time() + common.DRAIN_LIMIT
        procs = [multiprocessing.Process(target=_pg_loop, args=(batch, deadline, done))
                 for _ in range(PG_CLIENTS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - start
        if done.value < n:
            common.NOTES.append(f"postgres batch {batch}: {done.value:,} of {n:,} rows within the limit")
        return done.value / elapsed


SCHEMA_SQLITE = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY, arg INTEGER NOT NULL, state TEXT NOT NULL DEFAULT 'ready',
                   claimed_at REAL, finished_at REAL);
CREATE INDEX jobs_ready ON jobs (id) WHERE state = 'ready';
"""
CLAIM_SQLITE = """UPDATE jobs SET state = 'running', claimed_at = julianday('now') WHERE id IN (
    SELECT id FROM jobs INDEXED BY jobs_ready WHERE state = 'ready' ORDER BY id LIMIT ?) RETURNING id, arg"""


def sqlite(n: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "raw.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.executescript(SCHEMA_SQLITE)
        conn.execute("WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?) "
                     "INSERT INTO jobs (arg) SELECT x FROM g", (n,))
        done = 0
        start = time.perf_counter()
        deadline = start + common.DRAIN_LIMIT
        while time.perf_counter() < deadline:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(CLAIM_SQLITE, (batch,)).fetchall()
            conn.execute("COMMIT")
            if not rows:
                break
            ids = [r[0] for r in rows]
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"UPDATE jobs SET state = 'done', finished_at = julianday('now') "
                         f"WHERE id IN ({','.join('?' * len(ids))})", ids)
            conn.execute("COMMIT")
            done += len(ids)
        elapsed = time.perf_counter() - start
        conn.close()
        if done < n:
            common.NOTES.append(f"sqlite batch {batch}: {done:,} of {n:,} rows within the limit")
        return done / elapsed


BATCHES = (1, 10, 100)


def postgres_1(n: int) -> float:
    return postgres(n, 1)


def postgres_10(n: int) -> float:
    return postgres(n, 10)


def postgres_100(n: int) -> float:
    return postgres(n, 100)


def sqlite_1(n: int) -> float:
    return sqlite(n, 1)


def sqlite_10(n: int) -> float:
    return sqlite(n, 10)


def sqlite_100(n: int) -> float:
    return sqlite(n, 100)


# ---------------------------------------------------------------- raw inserts (bulk enqueue's ceiling)

INSERT_CHUNK = 1000  # rows per transaction, as the bulk enqueue figures use


def postgres_copy(n: int) -> float:
    """COPY n rows into the raw jobs table, INSERT_CHUNK rows per transaction, from Python tuples."""
    import psycopg

    with common.fresh_pg() as url, psycopg.connect(url) as conn:
        conn.execute(SCHEMA_PG)
        conn.commit()
        start = time.perf_counter()
        for first in range(0, n, INSERT_CHUNK):
            with conn.cursor().copy("COPY jobs (arg) FROM STDIN") as copy:
                for i in range(first, min(n, first + INSERT_CHUNK)):
                    copy.write_row((i,))
            conn.commit()
        return n / (time.perf_counter() - start)


def sqlite_insert(n: int) -> float:
    """executemany INSERT of n rows into the raw jobs table, INSERT_CHUNK rows per transaction."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "raw.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.executescript(SCHEMA_SQLITE)
        start = time.perf_counter()
        for first in range(0, n, INSERT_CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO jobs (arg) VALUES (?)",
                             ((i,) for i in range(first, min(n, first + INSERT_CHUNK))))
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
        conn.close()
        return n / elapsed

"""conveyor itself: enqueue through bench/__main__.py's functions; drain and latency through the probe,
as for every peer; and the scale run (drain with a big history in the table against an empty one)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import replace

from bench.peers import common

PROCESSES = int(os.environ.get("CONVEYOR_BENCH_PROCESSES", "2"))
CONCURRENCY = int(os.environ.get("CONVEYOR_BENCH_CONCURRENCY", "10"))
STORE = "sqlite"
WORKER = f"conveyor worker --processes {PROCESSES} --concurrency {CONCURRENCY}"
PACKAGES = ("conveyor", "psycopg", "psycopg-binary", "psycopg-pool")
BULK = "app.enqueue_many (1,000 per call)"


def configure(variant: str) -> None:
    global STORE
    STORE = variant


@contextlib.contextmanager
def _store() -> Iterator[str]:
    from bench.__main__ import fresh_store

    if STORE == "postgres":
        # the name run.py chose, so a killed run's database is dropped by the parent
        with common.fresh_pg() as url:
            yield url
    else:
        with fresh_store(STORE) as url:
            yield url


def enqueue_one(n: int) -> float:
    from bench.__main__ import enqueue_one as conveyor_enqueue_one

    with _store() as url:
        return conveyor_enqueue_one(url, n)


def enqueue_unique(n: int) -> float:
    """enqueue_one of the same job defined with unique=True (distinct args: every job is created)."""
    from bench.__main__ import enqueue_one as conveyor_enqueue_one

    with _store() as url:
        return conveyor_enqueue_one(url, n, "noop_unique")


def enqueue_bulk(n: int) -> float:
    from bench.__main__ import enqueue_bulk as conveyor_enqueue_bulk

    with _store() as url:
        return conveyor_enqueue_bulk(url, n)


def _worker_args() -> list[str]:
    return [sys.executable, "-m", "conveyor", "-A", "bench.peers.conveyor_probe:app", "worker",
            "--processes", str(PROCESSES), "--concurrency", str(CONCURRENCY)]


def _probe_app(url: str):  # type: ignore[no-untyped-def]
    from bench.peers import conveyor_probe

    app = conveyor_probe.app
    app.close()
    app.settings = replace(app.settings, database_url=url)
    app.migrate()
    return conveyor_probe


def _env(url: str, logging: bool) -> dict[str, str]:
    """The worker's environment: per-job logging off (WARNING), or conveyor's default (INFO)."""
    os.environ.pop("CONVEYOR_LOG_LEVEL", None)  # the workers inherit this process's environment
    env = {"CONVEYOR_DATABASE_URL": url}
    if not logging:
        env["CONVEYOR_LOG_LEVEL"] = "WARNING"
    return env


def _drain(url: str, n: int, job: str = "noop", logging: bool = False) -> float:
    probe = _probe_app(url)
    prepare = getattr(probe, job).prepare

    def fill(n: int) -> None:
        for first in range(0, n, 1000):
            probe.app.enqueue_many([prepare(i) for i in range(first, min(n, first + 1000))])
        probe.app.close()  # the client holds no connection while the worker runs

    return common.drain_with(n, fill, _worker_args(), _env(url, logging))


def drain(n: int) -> float:
    with _store() as url:
        return _drain(url, n)


def drain_default(n: int) -> float:
    """drain() with the default logging: one INFO line per job event, to the worker's log file."""
    with _store() as url:
        return _drain(url, n, logging=True)


def drain_keyed(n: int) -> float:
    """drain() of jobs that each carry a concurrency key (max 1), 100 distinct keys."""
    with _store() as url:
        return _drain(url, n, "noop_keyed")


HISTORY_FINISHED = int(os.environ.get("BENCH_HISTORY_FINISHED", "1000000"))
HISTORY_SCHEDULED = int(os.environ.get("BENCH_HISTORY_SCHEDULED", "100000"))


def drain_history(n: int) -> float:
    """drain() with HISTORY_FINISHED succeeded jobs (spread over the last week) and HISTORY_SCHEDULED
    jobs scheduled over the next day already in the table, statistics up to date (VACUUM ANALYZE /
    ANALYZE, as autovacuum or a maintenance job would leave them), the history sampling's marks
    past the filled rows (as a minute's sampling would leave them) and the fill checkpointed, as
    a table that grew over a week would be."""
    with _store() as url:
        _probe_app(url).app.close()
        _fill_history(url, HISTORY_FINISHED, HISTORY_SCHEDULED)
        return _drain(url, n)


# where the leader's history sampling would have got to after the week the fill stands for (it
# samples every minute): without it, its first sample in the timed drain counts every filled row
MARKS = "UPDATE conveyor_history_marks SET job_id = (SELECT MAX(id) FROM conveyor_jobs)"


def _fill_history(url: str, finished: int, scheduled: int) -> None:
    name = "bench.peers.conveyor_probe.noop"
    if STORE == "postgres":
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO conveyor_jobs (name, queue, state, args, attempt, run_at, created_at,"
                " started_at, finished_at, worker_id, result)"
                " SELECT %s, 'default', 'succeeded', '[' || g || ']', 1, t, t, t, t + interval '1 ms',"
                " 'w-history', 'null'"
                " FROM generate_series(1, %s) g, LATERAL (SELECT now() - g * interval '600 ms') AS x(t)",
                (name, finished))
            conn.execute(
                "INSERT INTO conveyor_jobs (name, queue, state, args, run_at, created_at)"
                " SELECT %s, 'default', 'scheduled', '[' || g || ']', now() + g * interval '860 ms', now()"
                " FROM generate_series(1, %s) g", (name, scheduled))
            conn.execute(MARKS)
            conn.execute("VACUUM ANALYZE conveyor_jobs")
            # the fill's own writes (~0.5 GB of WAL) must not spill a checkpoint into the timed drain
            conn.execute("CHECKPOINT")
        return
    import sqlite3

    from conveyor.store.sqlite import sqlite_path

    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    now = time.time()
    conn.execute("BEGIN")
    conn.execute(
        "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?)"
        " INSERT INTO conveyor_jobs (name, queue, state, args, attempt, run_at, created_at, started_at,"
        " finished_at, worker_id, result)"
        " SELECT ?, 'default', 'succeeded', '[' || x || ']', 1, ? - x * 0.6, ? - x * 0.6, ? - x * 0.6,"
        " ? - x * 0.6 + 0.001, 'w-history', 'null' FROM g", (finished, name, now, now, now, now))
    conn.execute(
        "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?)"
        " INSERT INTO conveyor_jobs (name, queue, state, args, run_at, created_at)"
        " SELECT ?, 'default', 'scheduled', '[' || x || ']', ? + x * 0.86, ? FROM g",
        (scheduled, name, now, now))
    conn.execute(MARKS)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def latency(n: int, logging: bool = False) -> tuple[float, float, float]:
    with _store() as url:
        probe = _probe_app(url)
        try:
            return common.latency_with(n, probe.noop.enqueue, _worker_args(), _env(url, logging))
        finally:
            probe.app.close()


def latency_default(n: int) -> tuple[float, float, float]:
    """latency() with the default logging."""
    return latency(n, logging=True)

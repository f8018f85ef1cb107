"""The dashboard on a big table: every page and API list, timed, with 1,000,000 finished and
10,000 dead jobs in the store (the issue's bar: each under 200 ms here).

    python -m bench.dashboard                       # both stores, 1,000,000 + 10,000
    python -m bench.dashboard --finished 100000 --store sqlite
    python -m bench --only dashboard                # the same as a section of bench/results.md

Requests go through the ASGI app in process (Starlette's test client), so the figures are the
dashboard's own time: routing, store reads, rendering. Each URL is asked once to warm up, then
``--repeat`` times; the table shows the median and the slowest. It prints figures, not pass/fail.
In ``make bench`` (``section``) it runs in a subprocess with a time limit, with ``--history``
finished jobs and a hundredth as many dead ones.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

NAME = "billing.charge_card"
ERROR = "CardDeclined: issuer said no (do not honour)"


@contextlib.contextmanager
def fresh(store: str) -> Iterator[str]:
    if store == "sqlite":
        with tempfile.TemporaryDirectory(prefix="conveyor-bench-dash-") as tmp:
            yield f"sqlite:///{Path(tmp) / 'conveyor.db'}"
        return
    import psycopg

    admin = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"conveyor_bench_dash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, finished: int, dead: int) -> None:
    """``finished`` succeeded jobs over the past week, ``dead`` dead ones with an error and one
    failed attempt each, and 2,000 ready and 1,000 scheduled, straight into the tables."""
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO conveyor_jobs (name, queue, state, args, kwargs, attempt, run_at, created_at,"
                " started_at, finished_at, worker_id, result)"
                " SELECT %s, 'q' || (g %% 4), 'succeeded', '[' || g || ']',"
                " '{\"customer\": \"c-' || g || '\"}', 1, t, t, t, t + interval '40 ms', 'w-1', 'null'"
                " FROM generate_series(1, %s) g, LATERAL (SELECT now() - g * interval '600 ms') AS x(t)",
                (NAME, finished))
            conn.execute(
                "INSERT INTO conveyor_jobs (name, queue, state, args, attempt, max_attempts, run_at,"
                " created_at, started_at, finished_at, worker_id, error)"
                " SELECT %s, 'q' || (g %% 4), 'dead', '[' || g || ']', 3, 3, t, t, t, t, 'w-1', %s || g"
                " FROM generate_series(1, %s) g, LATERAL (SELECT now() - g * interval '6 s') AS x(t)",
                (NAME, ERROR, dead))
            conn.execute(
                "INSERT INTO conveyor_attempts (job_id, attempt, worker_id, started_at, finished_at,"
                " outcome, error_class, error_message, traceback)"
                " SELECT id, 3, 'w-1', started_at, finished_at, 'error', 'CardDeclined', error,"
                " 'Traceback (most recent call last):\n  ...\nCardDeclined' FROM conveyor_jobs"
                " WHERE state = 'dead'")
            conn.execute(
                "INSERT INTO conveyor_jobs (name, queue, state, args, run_at, created_at)"
                " SELECT %s, 'q' || (g %% 4), CASE WHEN g <= 2000 THEN 'ready' ELSE 'scheduled' END,"
                " '[' || g || ']', now() + (g - 2000) * interval '1 s', now()"
                " FROM generate_series(1, 3000) g", (NAME,))
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
        return
    import sqlite3

    from conveyor.store.sqlite import sqlite_path

    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    now = time.time()
    series = "WITH RECURSIVE g(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM g WHERE x < ?)"
    conn.execute("BEGIN")
    conn.execute(
        f"{series} INSERT INTO conveyor_jobs (name, queue, state, args, kwargs, attempt, run_at,"
        " created_at, started_at, finished_at, worker_id, result)"
        " SELECT ?, 'q' || (x % 4), 'succeeded', '[' || x || ']', '{\"customer\": \"c-' || x || '\"}',"
        " 1, ? - x * 0.6, ? - x * 0.6, ? - x * 0.6, ? - x * 0.6 + 0.04, 'w-1', 'null' FROM g",
        (finished, NAME, now, now, now, now))
    conn.execute(
        f"{series} INSERT INTO conveyor_jobs (name, queue, state, args, attempt, max_attempts, run_at,"
        " created_at, started_at, finished_at, worker_id, error)"
        " SELECT ?, 'q' || (x % 4), 'dead', '[' || x || ']', 3, 3, ? - x * 6, ? - x * 6, ? - x * 6,"
        " ? - x * 6, 'w-1', ? || x FROM g", (dead, NAME, now, now, now, now, ERROR))
    conn.execute(
        "INSERT INTO conveyor_attempts (job_id, attempt, worker_id, started_at, finished_at, outcome,"
        " error_class, error_message, traceback) SELECT id, 3, 'w-1', started_at, finished_at, 'error',"
        " 'CardDeclined', error, 'Traceback (most recent call last):' || char(10) || '  ...'"
        " FROM conveyor_jobs WHERE state = 'dead'")
    conn.execute(
        f"{series} INSERT INTO conveyor_jobs (name, queue, state, args, run_at, created_at)"
        " SELECT ?, 'q' || (x % 4), CASE WHEN x <= 2000 THEN 'ready' ELSE 'scheduled' END,"
        " '[' || x || ']', ? + (x - 2000), ? FROM g", (3000, NAME, now, now))
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def urls(some_id: int, middle_id: int) -> list[str]:
    return [
        "/", "/queues", "/jobs", "/jobs?state=succeeded", f"/jobs?state=succeeded&before={middle_id}",
        "/jobs?state=dead", f"/jobs?queue=q1&name={NAME}", "/jobs?q=c-999999", "/jobs?q=CardDeclined",
        f"/jobs/{some_id}", "/dead", "/scheduled", "/schedules", "/workers", "/doctor", "/audit",
        "/api/jobs", "/api/jobs?state=succeeded", f"/api/jobs?state=succeeded&before={middle_id}",
        "/api/jobs?state=dead", "/api/jobs?q=c-999999", "/api/jobs?state=dead&q=honour",
        f"/api/jobs/{some_id}", "/api/queues", "/api/workers", "/api/schedules", "/api/doctor",
        "/api/history?minutes=10080", "/api/audit", "/api/operations", "/metrics",
    ]


def measure(url: str, repeat: int) -> list[tuple[str, int, float, float]]:
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

    from conveyor import Conveyor
    from conveyor.web import dashboard

    app = Conveyor(url)
    app.migrate()
    client = TestClient(dashboard(app), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 5000),
                        raise_server_exceptions=False)
    dead = app.client.list(state="dead", limit=1)
    some_id = dead[0].id if dead else 1
    rows = []
    # the dead jobs come after the finished ones: half the newest id is the middle of those
    for path in urls(some_id, some_id // 2):
        status = client.get(path).status_code  # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            client.get(path)
            times.append((time.perf_counter() - start) * 1000)
        rows.append((path, status, statistics.median(times), max(times)))
    app.close()
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n")[0])
    parser.add_argument("--finished", type=int, default=1_000_000)
    parser.add_argument("--dead", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--store", default="sqlite,postgres")
    args = parser.parse_args(argv)
    for store in args.store.split(","):
        with fresh(store) as url:
            from conveyor.store import open_store

            s = open_store(url)
            s.migrate()
            s.close()
            start = time.perf_counter()
            fill(url, args.finished, args.dead)
            print(f"\n### {store}: {args.finished:,} succeeded + {args.dead:,} dead jobs"
                  f" (filled in {time.perf_counter() - start:.0f} s)\n")
            print("| page or API list | status | median ms | slowest ms |")
            print("|---|---|---|---|")
            for path, status, median, slowest in measure(url, args.repeat):
                flag = "" if median < 200 else " **over 200 ms**"
                print(f"| `{path}` | {status} | {median:.1f}{flag} | {slowest:.1f} |")
            sys.stdout.flush()


LIMIT = 1800.0  # seconds for both stores, fills included


def section(args: argparse.Namespace, pg_version: str | None) -> list[str]:
    """``make bench``'s dashboard section: this module's tables, run in a subprocess."""
    finished, dead = args.history, max(1, args.history // 100)
    stores = "sqlite,postgres" if pg_version else "sqlite"
    command = [sys.executable, "-m", "bench.dashboard", "--finished", str(finished),
               "--dead", str(dead), "--store", stores]
    started = time.monotonic()
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=LIMIT,
                             cwd=Path(__file__).resolve().parent.parent)
        body = run.stdout.strip().splitlines()
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["no output"])[-1]
            body += ["", f"n/a: the run failed ({last[:160]})"]
    except subprocess.TimeoutExpired:
        body = [f"n/a: stopped at the {LIMIT:.0f} s limit"]
    print("\n".join(body), flush=True)
    body = [line.replace("### ", "### Dashboard, ", 1) if line.startswith("### ") else line
            for line in body]
    return [
        "",
        f"## The dashboard on a big table ({finished:,} finished + {dead:,} dead jobs)",
        "",
        "Every page and JSON list of the dashboard, requested through the ASGI app in process"
        " (Starlette's test client: routing, store reads, rendering, no network), once to warm up"
        " and then 5 times; median and slowest. The jobs are written straight into the tables"
        " (`bench/dashboard.py`), statistics updated and the fill checkpointed before the first"
        f" request; the whole section took {(time.monotonic() - started) / 60:.1f} min.",
        *body,
    ]


if __name__ == "__main__":
    main()

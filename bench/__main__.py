"""``make bench``: conveyor's enqueue rate, drain rate and idle wake-up latency on each store.

Prints a Markdown table (median of ``--runs`` runs) and writes it to bench/results.md. Every run
is bounded in time. PostgreSQL is used when reachable at CONVEYOR_BENCH_POSTGRES_URL (default
the local server); a fresh database is created and dropped for each run.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextmanager
def fresh_store(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    import psycopg

    name = f"conveyor_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use(url: str):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from bench import jobs

    jobs.app.close()
    jobs.app.settings = replace(jobs.app.settings, database_url=url)
    jobs.app.migrate()
    return jobs


def start_worker(url: str, processes: int, concurrency: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "CONVEYOR_LOG_LEVEL": "WARNING",
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "-A", "bench.jobs:app", "worker",
         "--processes", str(processes), "--concurrency", str(concurrency)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def pending(jobs) -> int:  # type: ignore[no-untyped-def]
    return sum(s.count("ready") + s.count("running") + s.count("scheduled")
               for s in jobs.app.store.queue_stats())


def enqueue_one(url: str, n: int) -> float:
    jobs = use(url)
    start = time.perf_counter()
    for i in range(n):
        jobs.noop.enqueue(i)
    return n / (time.perf_counter() - start)


def enqueue_bulk(url: str, n: int) -> float:
    jobs = use(url)
    start = time.perf_counter()
    for first in range(0, n, 1000):
        jobs.app.enqueue_many([jobs.noop.prepare(i) for i in range(first, min(n, first + 1000))])
    return n / (time.perf_counter() - start)


def drain(url: str, n: int, processes: int, concurrency: int, limit: float = 300) -> float:
    jobs = use(url)
    for first in range(0, n, 1000):
        jobs.app.enqueue_many([jobs.noop.prepare(i) for i in range(first, min(n, first + 1000))])
    worker = start_worker(url, processes, concurrency)
    start = time.perf_counter()
    try:
        while pending(jobs) and time.perf_counter() - start < limit:
            time.sleep(0.05)
        return n / (time.perf_counter() - start)
    finally:
        stop(worker)


def latency(url: str, n: int, rate: float = 100) -> tuple[float, float, float]:
    """Enqueue→start for ``n`` jobs at ``rate``/s into an idle worker, in ms (p50, p95, p99)."""
    jobs = use(url)
    worker = start_worker(url, 1, 4)
    try:
        time.sleep(2)  # let the worker become idle
        handles = []
        for i in range(n):
            handles.append(jobs.noop.enqueue(i))
            time.sleep(1 / rate)
        deadline = time.monotonic() + 60
        records = []
        for h in handles:
            h.wait(max(0.1, deadline - time.monotonic()))
            records.append(h.record())
    finally:
        stop(worker)
    waits = sorted((r.started_at - r.created_at).total_seconds() * 1000 for r in records)
    q = statistics.quantiles(waits, n=100)
    return q[49], q[94], q[98]


def median_of(runs: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(runs))


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain/bulk run")
    parser.add_argument("--one-by-one", type=int, default=5_000, help="jobs per 1-by-1 run")
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    stores = ["sqlite"] + (["postgres"] if postgres_available() else [])
    rows = []
    for kind in stores:
        def run(fn: Callable[[str], float], kind: str = kind) -> float:
            def once() -> float:
                with fresh_store(kind) as url:
                    return fn(url)
            return median_of(args.runs, once)

        one = run(lambda u: enqueue_one(u, args.one_by_one))
        bulk = run(lambda u: enqueue_bulk(u, args.jobs))
        rate = run(lambda u: drain(u, args.jobs, args.processes, args.concurrency))
        lats = []
        for _ in range(args.runs):
            with fresh_store(kind) as url:
                lats.append(latency(url, args.latency_jobs))
        p50, p95, p99 = (statistics.median(x[i] for x in lats) for i in range(3))
        rows.append(f"| conveyor | {kind} | {one:,.0f} | {bulk:,.0f} | {rate:,.0f} "
                    f"| {p50:.1f} / {p95:.1f} / {p99:.1f} |")
        print(rows[-1], flush=True)

    table = "\n".join([
        f"# conveyor benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; median of {args.runs} runs. Drain: "
        f"{args.jobs:,} queued no-op jobs, worker --processes {args.processes} "
        f"--concurrency {args.concurrency}, wall time including worker start-up. Latency: "
        f"{args.latency_jobs} jobs at ~100/s into an idle worker, enqueue→start.",
        "",
        "| system | store | enqueue 1-by-1/s | bulk enqueue/s | drain jobs/s | latency p50 / p95 / p99 ms |",
        "|---|---|---|---|---|---|",
        *rows,
    ])
    if "postgres" not in stores:
        table += f"\n\nPostgreSQL not reachable at {PG_ADMIN}: only SQLite measured."
    (ROOT / "bench" / "results.md").write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()

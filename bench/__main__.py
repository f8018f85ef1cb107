"""``make bench``: conveyor beside its peers on the same workload (a no-op job with one int argument).

    python -m bench [--runs 3] [--jobs 20000] [--only conveyor,celery,...] [--quick]

For conveyor (SQLite and PostgreSQL) and each peer (bench/peers/): enqueue one call at a time,
enqueue with the system's bulk API, drain ``--jobs`` queued jobs with a worker sized for 2 cores,
and enqueue→start latency of ``--latency-jobs`` jobs at ~100/s into an idle worker; then the raw
limits of the stores (a bare SKIP LOCKED loop in psycopg, a SQLite WAL loop) and conveyor's worker
RSS over a long run. Each figure is the median of ``--runs`` runs, each run a subprocess with a hard
time limit (bench/peers/run.py); a system that fails is a row "n/a (reason)". Prints Markdown
tables and writes them to bench/results.md.

The measurement functions below (enqueue_one, enqueue_bulk, drain, latency) are conveyor's own;
bench/peers/conveyor_bench.py calls them. PostgreSQL comes from CONVEYOR_BENCH_POSTGRES_URL
(default the local server), Redis from CONVEYOR_BENCH_REDIS_URL (database 15 of the local server).
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
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from bench.machine import (
    cpu_model,
    cpu_times,
    ensure_redis,
    pg_setting,
    pip_freeze,
    postgres_version,
    sqlite3_version,
    steal_share,
)
from bench.runs import Bench, fmt_latency, fmt_rate

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


def enqueue_one(url: str, n: int, job: str = "noop") -> float:
    jobs = use(url)
    enqueue = getattr(jobs, job).enqueue
    start = time.perf_counter()
    for i in range(n):
        enqueue(i)
    return n / (time.perf_counter() - start)


def enqueue_bulk(url: str, n: int) -> float:
    jobs = use(url)
    start = time.perf_counter()
    for first in range(0, n, 1000):
        jobs.app.enqueue_many([jobs.noop.prepare(i) for i in range(first, min(n, first + 1000))])
    return n / (time.perf_counter() - start)


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


# ---------------------------------------------------------------- the side-by-side run

SYSTEMS = ["conveyor-sqlite", "conveyor-postgres", "celery", "rq", "dramatiq", "huey", "arq", "saq",
           "procrastinate", "pgqueuer"]
EXTRAS = ["raw", "scale", "dashboard", "memory", "flow", "roundtrip"]
METRICS = ["enqueue_one", "enqueue_bulk", "drain", "latency"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per enqueue, bulk and drain run")
    parser.add_argument("--one-by-one", type=int, default=None, help="jobs per 1-by-1 run (default --jobs)")
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--memory-jobs", type=int, default=200_000,
                        help="jobs in the RSS run (0: skip)")
    parser.add_argument("--history", type=int, default=1_000_000,
                        help="finished jobs in the scale run (0: skip; a tenth as many scheduled)"
                        " and in the dashboard section (a hundredth as many dead)")
    parser.add_argument("--processes", type=int, default=2, help="conveyor worker --processes")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="conveyor worker --concurrency (10: its default)")
    parser.add_argument("--only", default="",
                        help="comma-separated: " + ",".join(["conveyor", *SYSTEMS, *EXTRAS]))
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 jobs, 100 latency jobs, 1 run")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--verbose", action="store_true", help="print the output of failed runs")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.jobs, args.latency_jobs = 1, 2_000, 100
        args.memory_jobs = min(args.memory_jobs, 20_000)
        args.history = min(args.history, 100_000)
    one_by_one = args.one_by_one or args.jobs

    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = [w for w in wanted if w != "conveyor" and w not in SYSTEMS + EXTRAS]
    if unknown:
        parser.error(f"unknown in --only: {', '.join(unknown)}")

    def chosen(name: str) -> bool:
        return not wanted or name in wanted or (name.startswith("conveyor-") and "conveyor" in wanted)

    started = time.monotonic()
    when = datetime.now(UTC)
    load = os.getloadavg()[0]
    cpu_before = cpu_times()
    redis_version = ensure_redis()
    pg_version = postgres_version()
    bench = Bench(args)
    packages: set[str] = set()
    configs: list[str] = []
    header = ["| system | store | enqueue 1-by-1/s | bulk enqueue/s | drain jobs/s "
              "| latency p50 / p95 / p99 ms |", "|---|---|---|---|---|---|"]
    print("\n".join(header), flush=True)
    chosen_systems = [s for s in SYSTEMS if chosen(s)]
    row_of: dict[str, str] = {}
    measured: list[tuple[str, str, str, int]] = []  # (system, name, store, jobs to drain)
    for system in chosen_systems:
        info = bench.once(system, "describe", 0, 120)
        store = (info.get("value") or {}).get("STORE") or ("postgres" if "postgres" in system else "redis")
        name = system.split("-")[0]
        missing = (store == "redis" and redis_version is None) or (store == "postgres" and pg_version is None)
        if "error" in info or missing:
            reason = info.get("error") or f"{store} not reachable"
            row_of[system] = f"| {name} | {store} | n/a ({reason}) | — | — | — |"
            continue
        d = info["value"]
        packages.update(d["PACKAGES"] or ())
        drain_n = min(args.jobs, d["DRAIN_MAX"] or args.jobs)
        configs.append(f"  - **{name}** ({store}): worker `{d['WORKER']}`; bulk: {d['BULK'] or 'none'}"
                       + (f"; drain of {drain_n:,} jobs only (slow)" if drain_n < args.jobs else ""))
        measured.append((system, name, store, drain_n))
    # metric by metric, the runs alternate between the systems (see Bench.alternated)
    one = bench.alternated([(m[0], one_by_one) for m in measured], "enqueue_one", 180)
    bulk = bench.alternated([(m[0], args.jobs) for m in measured], "enqueue_bulk", 180)
    rate = bench.alternated([(m[0], m[3]) for m in measured], "drain", 300)
    lat = bench.alternated([(m[0], args.latency_jobs) for m in measured], "latency", 180)
    for system, name, store, _ in measured:
        cells = [fmt_rate(one[system]), fmt_rate(bulk[system]), fmt_rate(rate[system]),
                 fmt_latency(lat[system])]
        if all(c == cells[0] and c.startswith("n/a") for c in cells):
            cells[1:] = ["—"] * 3  # one reason for the whole row
        row_of[system] = f"| {name} | {store} | " + " | ".join(cells) + " |"
    rows = [row_of[system] for system in chosen_systems]
    print("\n".join(rows), flush=True)

    roundtrip_lines: list[str] = []
    if measured and (not wanted or "roundtrip" in wanted):
        from bench import roundtrip

        roundtrip_lines = roundtrip.section(bench, args, measured, pg_version, fmt_rate)

    raw_rows: list[str] = []
    if not wanted or "raw" in wanted:
        from bench.peers.raw_stores import BATCHES, PG_CLIENTS

        for store, label, available in (
            ("postgres", f"PostgreSQL {pg_version} (synchronous_commit {pg_setting('synchronous_commit')}): "
                         f"{PG_CLIENTS} psycopg clients, SKIP LOCKED", pg_version),
            ("sqlite", f"SQLite {sqlite3_version()} WAL: 1 process, BEGIN IMMEDIATE", True),
        ):
            if not available:
                raw_rows.append(f"| {label} | " + " | ".join("n/a (not reachable)" for _ in BATCHES) + " |")
                continue
            cells = [fmt_rate(bench.repeated("raw", f"{store}_{b}", args.jobs, 240)) for b in BATCHES]
            insert = "postgres_copy" if store == "postgres" else "sqlite_insert"
            cells.append(fmt_rate(bench.repeated("raw", insert, args.jobs, 240)))
            raw_rows.append(f"| {label} | " + " | ".join(cells) + " |")
            print(raw_rows[-1], flush=True)
        packages.update({"psycopg", "psycopg-binary"})

    scale_rows: list[str] = []
    if args.history and (not wanted or "scale" in wanted):
        os.environ["BENCH_HISTORY_FINISHED"] = str(args.history)
        os.environ["BENCH_HISTORY_SCHEDULED"] = str(args.history // 10)
        for system in ("conveyor-sqlite", "conveyor-postgres"):
            if system == "conveyor-postgres" and pg_version is None:
                continue
            empty: list[float] = []
            full: list[float] = []
            for _ in range(args.runs):  # alternated, so both see the same machine
                for metric, values in (("drain", empty), ("drain_history", full)):
                    r = bench.attempt(system, metric, args.jobs, 600)
                    if "error" not in r:
                        values.append(r["value"])
            if not empty or not full:
                scale_rows.append(f"| {system.split('-')[1]} | n/a (a run failed) | — | — |")
            else:
                e, f = statistics.median(empty), statistics.median(full)
                change = (f - e) / e * 100
                scale_rows.append(f"| {system.split('-')[1]} | {e:,.0f} | {f:,.0f} | {change:+.1f}% |")
            print(scale_rows[-1], flush=True)

    dashboard_lines: list[str] = []
    if args.history and (not wanted or "dashboard" in wanted):
        from bench import dashboard

        dashboard_lines = dashboard.section(args, pg_version)

    flow_lines: list[str] = []
    if not wanted or "flow" in wanted or "conveyor" in wanted:
        from bench import flow

        flow_lines = flow.section(bench, args, one_by_one, pg_version, fmt_rate)

    mem_rows: list[str] = []
    if args.memory_jobs and (not wanted or "memory" in wanted):
        r = bench.once("memory", "rss", args.memory_jobs, 900)
        if "error" in r:
            mem_rows.append(f"| n/a ({r['error']}) | | |")
        else:
            readings = {int(k): v for k, v in r["value"].items()}
            base = readings.get(min(10_000, args.memory_jobs), 0)
            for done, kb in sorted(readings.items()):
                growth = f"{(kb - base) / base * 100:+.1f}%" if base and done != min(readings) else "—"
                mem_rows.append(f"| {done:,} | {kb / 1024:.1f} MiB | {growth} |")
        print("\n".join(mem_rows), flush=True)
        packages.add("conveyor")

    elapsed = time.monotonic() - started
    packages.update({"conveyor", "redis"})
    lines = [
        f"# conveyor and its peers, {when:%Y-%m-%d %H:%M} UTC",
        "",
        f"{cpu_model()}, {os.cpu_count()} cores (load average {load:.2f} at the start; CPU time "
        f"stolen by the virtual machine's host during the run: {steal_share(cpu_before, cpu_times())}); "
        "Python "
        f"{platform.python_version()}; PostgreSQL {pg_version or 'not reachable'}, Redis "
        f"{redis_version or 'not reachable'}, both on loopback; median of {args.runs} run(s) per figure; "
        f"the whole run took {elapsed / 60:.1f} min.",
        "",
        *header,
        *rows,
        "",
        f"- Each figure is the median of {args.runs} runs; for each figure the runs alternate between the "
        "systems (run 1 of every system, then run 2 of every system...), so that each sees the same "
        "drift of a shared machine's speed.",
        f"- enqueue 1-by-1: {one_by_one:,} jobs, one call each, one client process. Bulk: {args.jobs:,} jobs "
        "through the system's own API for many jobs, 1,000 per call (see below for what that is).",
        f"- drain: {args.jobs:,} no-op jobs queued first, then the worker launched; wall time from the "
        "launch (start-up included) until the last job has run.",
        f"- latency: {args.latency_jobs} jobs at ~100/s into a worker that has been idle 2 s (after one "
        "warm-up job); from the client's time.time() just before the enqueue call to the time.time() the job "
        "writes as its first statement (one O_APPEND line per job in a file, the same for every system, "
        "conveyor included).",
        "- Worker configurations (drain and latency use the same one), sized for 2 cores:",
        *configs,
    ]
    lines += roundtrip_lines
    if raw_rows:
        lines += [
            "",
            f"## Raw store limits ({args.jobs:,} rows claimed then completed, rows/s)",
            "",
            "| loop | batch 1 | batch 10 | batch 100 | insert |",
            "|---|---|---|---|---|",
            *raw_rows,
            "",
            "Claim = `UPDATE … WHERE id IN (SELECT … ORDER BY id LIMIT batch [FOR UPDATE SKIP LOCKED]) "
            "RETURNING`, complete = a second `UPDATE … WHERE id = ANY(…)`; each its own transaction, "
            "so batch 1 is two commits per row. Insert: rows of one int into the same minimal table, "
            "1,000 per transaction (PostgreSQL: COPY; SQLite: executemany). No job system, no payload "
            "decoding: the ceiling a job system on that store works under.",
        ]
    if scale_rows:
        lines += [
            "",
            f"## conveyor drain as the table grows ({args.jobs:,} jobs, median of {args.runs})",
            "",
            f"| store | empty table, jobs/s | with {args.history:,} finished + {args.history // 10:,} "
            "scheduled jobs, jobs/s | change |",
            "|---|---|---|---|",
            *scale_rows,
            "",
            "The same drain as above, once on an empty table and once after "
            f"{args.history:,} succeeded jobs (spread over the past week) and {args.history // 10:,} jobs "
            "scheduled over the next day were written to it, statistics up to date (VACUUM ANALYZE / "
            "ANALYZE) and the fill checkpointed (CHECKPOINT / wal_checkpoint), so that the timed drain "
            "does not pay for the fill's own writes. The two alternate, run by run.",
        ]
    lines += dashboard_lines
    lines += flow_lines
    if mem_rows:
        lines += [
            "",
            f"## conveyor worker memory (SQLite, one run of {args.memory_jobs:,} jobs)",
            "",
            "| jobs done | worker RSS | growth since 10k |",
            "|---|---|---|",
            *mem_rows,
            "",
            "RSS of the worker child process (`--processes 1 --concurrency 8`), from /proc.",
        ]
    if bench.notes:
        lines += ["", "## Notes from the runs", "", *(f"- {n}" for n in bench.notes)]
    lines += ["", "## Versions", "", "```", *pip_freeze(packages), "```"]
    text = "\n".join(lines) + "\n"
    Path(args.output).write_text(text)
    print("\n" + text, flush=True)


if __name__ == "__main__":
    main()

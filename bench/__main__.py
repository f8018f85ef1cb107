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
EXTRAS = ["raw", "scale", "memory", "flow"]
METRICS = ["enqueue_one", "enqueue_bulk", "drain", "latency"]
RETRY_PAUSE = 10.0  # s before a failed run is tried again
REDIS_START = ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
               "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
               "--logfile", "/var/log/redis/ci.log"]


def ensure_redis() -> str | None:
    """Redis answers (started here if it does not and the URL is the default local one): its version."""
    from bench.peers.common import REDIS_URL, redis_client

    def version() -> str:
        r = redis_client()
        try:
            return str(r.info("server")["redis_version"])
        finally:
            r.close()

    try:
        return version()
    except Exception:
        if "127.0.0.1:6379" not in REDIS_URL:
            return None
    try:
        subprocess.run(REDIS_START, check=True, timeout=30, capture_output=True)
    except (OSError, subprocess.SubprocessError) as e:
        print(f"make bench: Redis is not answering and could not be started: {e}", file=sys.stderr)
        return None
    for _ in range(50):
        try:
            return version()
        except Exception:
            time.sleep(0.1)
    return None


def postgres_version() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            return str(row[0]).split()[0] if row else "?"
    except Exception:
        return None


def pg_setting(name: str) -> str:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
            return str(row[0]) if row else "?"
    except Exception:
        return "?"


def cpu_times() -> list[int]:
    """The machine's cumulative CPU time by kind (/proc/stat's first line; empty elsewhere)."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return []


def steal_share(before: list[int], after: list[int]) -> str:
    """How much of the CPU time a virtual machine's host kept for others meanwhile (steal)."""
    if len(before) < 8 or len(after) < 8:
        return "unknown"
    total = sum(after) - sum(before)
    return f"{(after[7] - before[7]) / total * 100:.0f}%" if total else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pip_freeze(packages: set[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"],
                         capture_output=True, text=True, timeout=60).stdout
    norm = {p.lower().replace("_", "-") for p in packages}
    keep = []
    for line in out.splitlines():
        name = line.split("==")[0].split(" @ ")[0].strip().lower().replace("_", "-")
        if name in norm:
            keep.append(line.strip())
    if "conveyor" in norm:
        from importlib.metadata import version

        keep.append(f"conveyor=={version('conveyor')} (this repository, {git_head()})")
    return sorted(keep, key=str.lower)


def git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "conveyor"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return f"commit {out}{' + uncommitted changes' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"


class Bench:
    """Runs the measurements through bench.peers.run, keeps the medians, notes and failures."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.notes: list[str] = []
        self.env = {"CONVEYOR_BENCH_PROCESSES": str(args.processes),
                    "CONVEYOR_BENCH_CONCURRENCY": str(args.concurrency)}

    def once(self, system: str, metric: str, n: int, limit: float) -> dict:  # type: ignore[type-arg]
        from bench.peers.run import measure

        r = measure(system, metric, n, limit, self.env)
        for note in r.get("notes") or []:
            self.notes.append(f"{system} {metric}: {note}")
        if "error" in r and self.args.verbose:
            print(f"--- {system} {metric} failed: {r['error']}", r.get("stderr", ""), r.get("worker_log", ""),
                  sep="\n", file=sys.stderr)
        return r

    def attempt(self, system: str, metric: str, n: int, limit: float) -> dict:  # type: ignore[type-arg]
        """One run; a failed run is tried once more after a pause (the stores are shared with
        other work on this machine, e.g. a test suite restarting PostgreSQL)."""
        r = self.once(system, metric, n, limit)
        if "error" in r:
            time.sleep(RETRY_PAUSE)
            self.notes.append(f"{system} {metric}: a run failed ({r['error']}) and was tried again")
            r = self.once(system, metric, n, limit)
            if "error" in r:
                self.notes.append(f"{system} {metric}: a run failed twice ({r['error']})")
        return r

    @staticmethod
    def median(results: list[dict]):  # type: ignore[no-untyped-def, type-arg]
        """Median over the runs of a number or of each element of a tuple; or "n/a (reason)"."""
        values = [r["value"] for r in results if "error" not in r]
        if not values:
            return f"n/a ({results[0]['error']})" if results else "n/a (not run)"
        if values[0] is None:
            return None
        if isinstance(values[0], list):
            return [statistics.median(v[i] for v in values) for i in range(len(values[0]))]
        return statistics.median(values)

    def repeated(self, system: str, metric: str, n: int, limit: float):  # type: ignore[no-untyped-def]
        return self.median([self.attempt(system, metric, n, limit) for _ in range(self.args.runs)])

    def alternated(self, systems: list[tuple[str, int]], metric: str, limit: float):  # type: ignore[no-untyped-def]
        """``metric`` for each (system, n), run 1 of every system, then run 2 of every system...:
        on a machine whose speed drifts (a shared host), each system sees the same spread of
        conditions. Returns {system: median}."""
        results: dict[str, list[dict]] = {system: [] for system, _ in systems}  # type: ignore[type-arg]
        for _ in range(self.args.runs):
            for system, n in systems:
                results[system].append(self.attempt(system, metric, n, limit))
        return {system: self.median(found) for system, found in results.items()}


def fmt_rate(v) -> str:  # type: ignore[no-untyped-def]
    if isinstance(v, str):
        return v
    if v is None:
        return "—"
    return f"{v:,.0f}"


def fmt_latency(v) -> str:  # type: ignore[no-untyped-def]
    if isinstance(v, str):
        return v
    if v is None:
        return "—"
    return " / ".join("∞" if x == float("inf") else f"{x:.1f}" for x in v)


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
                        help="finished jobs in the scale run (0: skip); a tenth as many scheduled")
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


def sqlite3_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


if __name__ == "__main__":
    main()

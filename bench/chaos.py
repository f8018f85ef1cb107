"""``make chaos``: jobs under fire. Prints jobs, lost (must be 0), dead (must be 0), duplicates
per kill, jobs running in each killed process, rescue times.

N jobs (most a few ms, one in ten 0.5-3 s with heartbeats) on 2 supervisors (2 processes x 4
slots each); a random worker child is SIGKILLed every 2 s for the whole run and, on PostgreSQL,
the server is restarted once in the middle. Every execution is logged to a side file; at the
end each job must have succeeded. None of these jobs is a poison pill, so a job that ends
``dead`` is an innocent bystander of the kills and is counted as such (target: 0).

On PostgreSQL the run uses a private server started for it (bench/pgcluster.py: initdb in a
temporary directory, a free port) and restarts that one; a server it did not start is never
stopped. With --no-restart it uses a throw-away database at CONVEYOR_BENCH_POSTGRES_URL instead.

    python -m bench.chaos --store sqlite --jobs 20000
    python -m bench.chaos --store postgres --jobs 20000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import mean
from urllib.parse import urlsplit

from bench.pgcluster import PrivateCluster
from conveyor import StoreError

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    jobs: int = 0
    succeeded: int = 0
    dead: int = 0  # innocent: no chaos job is a poison pill
    lost: int = 0
    rerun: int = 0
    duplicate_runs: int = 0
    unexplained_duplicates: int = 0  # ran twice with no kill of the process that ran it first
    kills: int = 0
    # per kill: jobs the killed process held past their start (its worker_lost attempts)
    running_at_kill: list[int] = field(default_factory=list)
    max_rescue_s: float = 0.0
    wall_s: float = 0.0
    restarted_store: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def poisoned(self) -> int:
        """Jobs that ended dead (the older name; under chaos none is a real poison pill)."""
        return self.dead

    @property
    def duplicates_per_kill(self) -> float:
        return self.duplicate_runs / self.kills if self.kills else 0.0

    def table(self, store: str) -> str:
        at_kill = self.running_at_kill
        running = f"{mean(at_kill):.1f} avg, {max(at_kill)} max" if at_kill else "n/a"
        rows = [
            ("store", store), ("jobs", f"{self.jobs:,}"), ("succeeded", f"{self.succeeded:,}"),
            ("dead (innocent)", f"{self.dead} (target 0: no job here is a poison pill)"),
            ("lost", self.lost),
            ("jobs re-run after a kill", self.rerun),
            ("duplicate executions", f"{self.duplicate_runs} (ran to the end more than once)"),
            ("duplicates per kill", f"{self.duplicates_per_kill:.2f}"),
            ("duplicates not explained by a kill", self.unexplained_duplicates),
            ("jobs lost with each killed process", running),
            ("worker kills", self.kills), ("max kill → rescue", f"{self.max_rescue_s:.2f} s"),
            ("store restarted mid-run", "yes" if self.restarted_store else "no"),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]
        out = ["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        return "\n".join(out + [f"\n{n}" for n in self.notes])


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def serves(cluster: PrivateCluster, url: str) -> bool:
    """Whether ``url`` points at ``cluster`` (so that restarting it is an outage of the run)."""
    parts = urlsplit(url)
    return parts.hostname in ("127.0.0.1", "localhost") and parts.port == cluster.port


def run(url: str, n: int, *, kill_every: float = 2.0, restart: PrivateCluster | None = None,
        limit: float = 900, seed: int = 1) -> Result:
    """``restart``: a private cluster serving ``url``, stopped for 3 s once half the jobs ran."""
    from bench import chaos_jobs as jobs

    if restart is not None and not serves(restart, url):
        raise ValueError(f"the store URL is not on the private cluster (port {restart.port})")
    rng = random.Random(seed)
    log = Path(tempfile.mkdtemp(prefix="conveyor-chaos-")) / "runs.log"
    jobs.app.close()
    jobs.app.settings = replace(jobs.app.settings, database_url=url)
    jobs.app.migrate()
    lengths = [rng.uniform(0.5, 3.0) if rng.random() < 0.1 else rng.uniform(0, 0.005)
               for _ in range(n)]
    handles = []
    for first in range(0, n, 2000):
        handles += jobs.app.enqueue_many([jobs.work.prepare(s) for s in lengths[first:first + 2000]])
    env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "CONVEYOR_CHAOS_LOG": str(log),
           "CONVEYOR_RESCUE_AFTER": "3", "CONVEYOR_HEARTBEAT_INTERVAL": "0.5",
           "CONVEYOR_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    sups = [subprocess.Popen(
        [sys.executable, "-m", "conveyor", "-A", "bench.chaos_jobs:app", "worker",
         "--processes", "2", "--concurrency", "4"],
        env={**env, "CONVEYOR_HOST_ID": f"chaos-{k}"}, cwd=ROOT, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for k in range(2)]
    result = Result(jobs=n)
    kills: list[tuple[float, str, int]] = []  # (time, worker id if known, pid)
    workers: dict[int, str] = {}  # pid -> worker id, as last seen
    start = time.time()
    next_kill = time.monotonic() + kill_every
    try:
        while time.time() - start < limit:
            time.sleep(0.1)
            try:
                stats = jobs.app.store.queue_stats()
                workers = {p.pid: p.id for p in jobs.app.store.process_list()}
            except StoreError:  # the store restarting: keep killing, look again
                stats = None
            if stats is not None and not any(
                s.count("ready") or s.count("running") or s.count("failed") for s in stats
            ):
                break
            if restart is not None and not result.restarted_store and _ended(log) > n // 2:
                restart.restart(down_for=3)
                result.restarted_store = True
            if time.monotonic() >= next_kill:
                next_kill += kill_every
                victims = [c for s in sups for c in children(s.pid)]
                if victims:
                    victim = rng.choice(victims)
                    try:
                        os.kill(victim, signal.SIGKILL)
                    except ProcessLookupError:  # gone since pgrep: no kill this turn
                        continue
                    kills.append((time.time(), workers.get(victim, ""), victim))
    finally:
        result.wall_s = time.time() - start
        for s in sups:
            s.send_signal(signal.SIGTERM)
        for s in sups:
            try:
                s.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(s.pid, signal.SIGKILL)
    return summarize(jobs.app, handles, log, kills, result)


def _ended(log: Path) -> int:
    return log.read_text().count("E ") if log.exists() else 0


def summarize(app, handles, log: Path, kills, result: Result) -> Result:  # type: ignore[no-untyped-def]
    from conveyor import JobState

    ends = Counter(int(line.split()[1]) for line in log.read_text().splitlines() if line[0] == "E")
    states = Counter()
    for h in handles:
        state = h.status()
        states[state] += 1
        if state is JobState.DEAD:
            result.dead += 1
        elif state is not JobState.SUCCEEDED or ends[h.id] == 0:
            result.lost += 1
    result.succeeded = states[JobState.SUCCEEDED]
    result.duplicate_runs = sum(c - 1 for c in ends.values() if c > 1)
    result.kills = len(kills)
    # an attempt lost to a kill names the worker, or (its id not yet seen) the process
    by_worker = {w: k for k, (_, w, _) in enumerate(kills) if w}
    by_pid = {pid: k for k, (_, _, pid) in enumerate(kills)}

    def kill_of(attempt) -> int | None:  # type: ignore[no-untyped-def]
        if attempt.outcome != "worker_lost":
            return None
        if attempt.worker_id in by_worker:
            return by_worker[attempt.worker_id]
        pid = re.match(r"worker process (\d+) ", attempt.error_message or "")
        return by_pid.get(int(pid[1])) if pid else None

    starts = [line.split() for line in log.read_text().splitlines() if line[0] == "S"]
    restarted = Counter(int(s[1]) for s in starts)
    result.rerun = sum(1 for c in restarted.values() if c > 1)
    running_in = Counter[int]()  # kill -> jobs the killed process held past their start
    unexplained: list[str] = []
    for job_id in (j for j, c in restarted.items() if c > 1):
        by_a_kill = False
        attempts = app.handle(job_id).attempts()
        for attempt in attempts:
            kill = kill_of(attempt)
            if kill is None:
                continue
            by_a_kill = True
            running_in[kill] += 1
            if attempt.finished_at:
                delay = attempt.finished_at.timestamp() - kills[kill][0]
                result.max_rescue_s = max(result.max_rescue_s, delay)
        if ends[job_id] > 1 and not by_a_kill:
            result.unexplained_duplicates += ends[job_id] - 1
            unexplained.append(f"job {job_id}: " + "; ".join(
                f"{a.attempt} {a.outcome} on {a.worker_id} ({a.error_message or ''})"
                for a in attempts))
    result.running_at_kill = [running_in[k] for k in range(len(kills))]
    if unexplained:
        result.notes.append("ran twice with no kill of the process that ran it first:\n"
                            + "\n".join(unexplained[:10]))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--no-restart", action="store_true",
                        help="skip the PostgreSQL restart (and use CONVEYOR_BENCH_POSTGRES_URL)")
    args = parser.parse_args()
    from bench.__main__ import fresh_store

    if args.store == "postgres" and not args.no_restart:
        with PrivateCluster() as cluster:
            print(f"chaos: a private PostgreSQL on port {cluster.port}, restarted mid-run",
                  file=sys.stderr)
            url = cluster.create_database("conveyor_chaos")
            result = run(url, args.jobs, restart=cluster)
    else:
        with fresh_store(args.store) as url:
            result = run(url, args.jobs)
    print(result.table(args.store))
    sys.exit(1 if result.lost or result.dead else 0)


if __name__ == "__main__":
    main()

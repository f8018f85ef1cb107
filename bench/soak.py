"""``make soak``: a mixed workload for N minutes under random kills, with the invariants checked
throughout. Prints final states by kind, kills, duplicate executions and violations (must be 0).

Jobs of 1 ms to 60 s (most a few ms, a few long with heartbeats), sync and async, some failing a
few times before they work, some overrunning their timeout on the first attempt, and a few that
kill their own process every time (``os._exit`` or SIGKILL: they must end ``dead``, and only
they). Two supervisors (2 processes x 4 slots, rescue_after=3) run them while jobs keep being
enqueued; a random worker child is SIGKILLed every few seconds and now and then a whole
supervisor gets SIGTERM and is started again. Every execution is logged to a side file. The
invariant checker (tests/invariants.py) runs every ``--check-every`` seconds with the workers
live and once more after they stopped; after a drain every job must be in a final state.

    python -m bench.soak --store sqlite --minutes 10
    python -m bench.soak --store postgres --minutes 1
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from conveyor import StoreError
from conveyor.models import FINISHED_STATES, JobFilter, JobState
from conveyor.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.invariants

from tests.invariants import find_violations  # noqa: E402

RESCUE_AFTER = 3.0
STALE_AFTER = 3 * RESCUE_AFTER + 10  # a dead worker's jobs must be rescued well within this
EXPECTED_DEAD = {"kills_itself"}
# (kind, weight) of the steady mix; long jobs of 10-60 s and self-killers are added on a timer
MIX = [("quick", 60), ("aquick", 15), ("long", 4), ("flaky", 6), ("aflaky", 3),
       ("overrun", 0.5), ("aoverrun", 1.5)]


@dataclass
class Result:
    minutes: float = 0.0
    kinds: dict[int, str] = field(default_factory=dict)  # job id -> kind
    states: dict[int, JobState] = field(default_factory=dict)  # job id -> final state
    kills: int = 0
    terms: int = 0
    term_stop_s: list[float] = field(default_factory=list)
    checks: int = 0
    violations: list[str] = field(default_factory=list)
    duplicates: int = 0  # a job's body ran to success more than once
    concurrent: list[str] = field(default_factory=list)  # one job running twice at once
    wall_s: float = 0.0
    logs: Path | None = None

    @property
    def unfinished(self) -> list[int]:
        return [j for j in self.kinds if self.states.get(j) not in FINISHED_STATES]

    @property
    def innocent_dead(self) -> list[int]:
        return [j for j, k in self.kinds.items()
                if self.states.get(j) is JobState.DEAD and k not in EXPECTED_DEAD]

    @property
    def failed(self) -> bool:
        return bool(self.violations or self.innocent_dead or self.unfinished or self.concurrent)

    def table(self, store: str) -> str:
        states = [JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED]
        by_kind: dict[str, Counter[str]] = defaultdict(Counter)
        for job_id, kind in self.kinds.items():
            by_kind[kind][str(self.states.get(job_id, "missing"))] += 1
        head = "| kind | jobs | " + " | ".join(states) + " | not final |"
        out = [f"store {store}, {self.minutes:g} min of enqueuing, wall {self.wall_s:.0f} s", "",
               head, "|" + "---|" * (len(states) + 3)]
        for kind in sorted(by_kind, key=lambda k: -sum(by_kind[k].values())):
            c = by_kind[kind]
            rest = sum(c.values()) - sum(c[s] for s in states)
            out.append(f"| {kind} | {sum(c.values())} | "
                       + " | ".join(str(c[s]) for s in states) + f" | {rest} |")
        per_kill = self.duplicates / self.kills if self.kills else 0.0
        terms = f"{self.terms}" + (f" (stopped in {max(self.term_stop_s):.1f} s at most)"
                                   if self.term_stop_s else "")
        rows = [
            ("jobs", len(self.kinds)), ("worker children SIGKILLed", self.kills),
            ("supervisors SIGTERMed and restarted", terms),
            ("duplicate executions (ran to success twice)", f"{self.duplicates} ({per_kill:.2f} per kill)"),
            ("one job running twice at once (must be 0)", len(self.concurrent)),
            ("dead, not a self-killing job (must be 0)", len(self.innocent_dead)),
            ("not in a final state after the drain (must be 0)", len(self.unfinished)),
            ("invariant checks run", self.checks),
            ("invariant violations (must be 0)", len(self.violations)),
        ]
        out += ["", "| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
        notes = [*self.violations[:20], *self.concurrent[:10]]
        notes += [f"dead but innocent: job {j} ({self.kinds[j]})" for j in self.innocent_dead[:10]]
        notes += [f"not final: job {j} ({self.kinds[j]}, {self.states.get(j)})"
                  for j in self.unfinished[:10]]
        if notes:
            out += ["", *notes]
        if self.logs:
            out += ["", f"worker output and the execution log: {self.logs}"]
        return "\n".join(out)


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def draw(rng: random.Random, jobs: Any, kind: str) -> Any:
    """One prepared job of a kind, its arguments drawn."""
    ms = 10 ** rng.uniform(0, 2)  # 1-100 ms, most near the low end
    if kind == "quick":
        return jobs.quick.prepare(ms)
    if kind == "aquick":
        return jobs.aquick.prepare(ms)
    if kind == "long":
        return jobs.long.prepare(rng.uniform(0.5, 5))
    if kind in ("flaky", "aflaky"):
        return getattr(jobs, kind).prepare(rng.randint(1, 3), ms)
    return getattr(jobs, kind).prepare(3.0)  # overrun, aoverrun: 3 s against a 1 s timeout


class Soak:
    """The processes and the clock of one run."""

    def __init__(self, url: str, minutes: float, seed: int) -> None:
        from bench import soak_jobs

        self.url, self.minutes, self.rng = url, minutes, random.Random(seed)
        self.jobs = soak_jobs
        self.dir = Path(tempfile.mkdtemp(prefix="conveyor-soak-"))
        self.log = self.dir / "runs.log"
        self.result = Result(minutes=minutes, logs=self.dir)
        self.env = {**os.environ, "CONVEYOR_DATABASE_URL": url, "CONVEYOR_SOAK_LOG": str(self.log),
                    "CONVEYOR_RESCUE_AFTER": str(RESCUE_AFTER), "CONVEYOR_LOG_LEVEL": "WARNING",
                    "PYTHONPATH": str(ROOT)}
        self.sups: list[subprocess.Popen[bytes]] = [self.start(k) for k in range(2)]
        self.stopping: dict[int, tuple[subprocess.Popen[bytes], float]] = {}  # slot -> (proc, t)
        self.kill_times: dict[int, float] = {}  # pid -> when we SIGKILLed it
        self.verified: set[int] = set()  # jobs found final and checked since
        self.checker: Store = open_store(url)

    def start(self, k: int) -> subprocess.Popen[bytes]:
        with (self.dir / f"supervisor-{k}.out").open("ab") as sink:
            return subprocess.Popen(
                [sys.executable, "-m", "conveyor", "-A", "bench.soak_jobs:app", "worker",
                 "--processes", "2", "--concurrency", "4"],
                env={**self.env, "CONVEYOR_HOST_ID": f"soak-{k}"}, cwd=ROOT,
                start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)

    # --- the load ------------------------------------------------------------------------
    def enqueue(self, prepared: list[tuple[str, Any]]) -> None:
        try:
            handles = self.jobs.app.enqueue_many([p for _, p in prepared])
        except StoreError as e:
            print(f"soak: enqueue failed, skipped: {e}", file=sys.stderr)
            return
        for (kind, _), handle in zip(prepared, handles, strict=True):
            self.result.kinds[handle.id] = kind

    def batch(self) -> None:
        names = [k for k, _ in MIX]
        kinds = self.rng.choices(names, weights=[w for _, w in MIX], k=8)
        self.enqueue([(k, draw(self.rng, self.jobs, k)) for k in kinds])

    def long_one(self) -> None:
        self.enqueue([("long", self.jobs.long.prepare(self.rng.uniform(10, 60)))])

    def killer(self) -> None:
        how = self.rng.choice(["exit", "sigkill"])
        self.enqueue([("kills_itself", self.jobs.kills_itself.prepare(how))])

    # --- the chaos -----------------------------------------------------------------------
    def kill_a_child(self) -> None:
        victims = [c for k, s in enumerate(self.sups) if k not in self.stopping
                   for c in children(s.pid)]
        if victims:
            victim = self.rng.choice(victims)
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                return
            self.kill_times[victim] = time.time()
            self.result.kills += 1

    def term_a_supervisor(self) -> None:
        k = self.rng.choice([k for k in range(len(self.sups)) if k not in self.stopping] or [-1])
        if k >= 0:
            self.sups[k].send_signal(signal.SIGTERM)
            self.stopping[k] = (self.sups[k], time.monotonic())
            self.result.terms += 1

    def restart_stopped(self) -> None:
        for k, (proc, since) in list(self.stopping.items()):
            if proc.poll() is not None:
                self.result.term_stop_s.append(time.monotonic() - since)
                del self.stopping[k]
                self.sups[k] = self.start(k)

    # --- the checks ----------------------------------------------------------------------
    def check(self, workers_stopped: bool = False) -> None:
        """Invariants over the jobs not yet verified final (all of them at the end)."""
        try:
            final = {j.id for j in self.listed(FINISHED_STATES)}
            ids = None if workers_stopped else set(self.result.kinds) - self.verified
            found = find_violations(self.checker, workers_stopped=workers_stopped,
                                    stale_after=STALE_AFTER, job_ids=ids)
        except StoreError as e:
            print(f"soak: invariant check skipped, store unavailable: {e}", file=sys.stderr)
            return
        self.result.checks += 1
        self.verified |= final
        for problem in found:
            if problem not in self.result.violations:
                print(f"soak: VIOLATION {problem}", file=sys.stderr)
                self.result.violations.append(problem)

    def listed(self, states: Any = ()) -> list[Any]:
        out, before = [], None
        while True:
            page = self.checker.job_list(JobFilter(states=tuple(states), limit=5000, before_id=before))
            out += page
            if len(page) < 5000:
                return out
            before = page[-1].id

    def all_final(self) -> bool:
        waiting = [j for j in self.listed() if j.id in self.result.kinds and not j.state.finished]
        return not waiting

    # --- the run -------------------------------------------------------------------------
    def run(self, drain: float, check_every: float, kill_every: float) -> Result:
        start = time.monotonic()
        end = start + self.minutes * 60
        term_every = min(75.0, self.minutes * 30)
        due = {"batch": start, "long": start + 5, "killer": start + 8, "kill": start + kill_every,
               "term": start + term_every, "check": start + check_every, "say": start + 30}
        try:
            while (now := time.monotonic()) < end:
                self.step(now, due, kill_every, term_every, check_every)
                time.sleep(0.05)
            self.drain(drain, check_every)
        finally:
            self.stop_all()
            self.result.wall_s = time.monotonic() - start
        self.check(workers_stopped=True)
        self.result.states = {j.id: j.state for j in self.listed()}
        self.count_executions()
        self.checker.close()
        return self.result

    def step(self, now: float, due: dict[str, float], kill_every: float, term_every: float,
             check_every: float) -> None:
        every = {"batch": 0.5, "long": 20.0, "killer": 30.0, "kill": kill_every,
                 "term": term_every, "check": check_every, "say": 30.0}
        actions = {"batch": self.batch, "long": self.long_one, "killer": self.killer,
                   "kill": self.kill_a_child, "term": self.term_a_supervisor,
                   "check": self.check, "say": self.say}
        self.restart_stopped()
        for name, when in due.items():
            if now >= when:
                due[name] = when + every[name]
                actions[name]()

    def say(self) -> None:
        final = sum(1 for j in self.listed(FINISHED_STATES) if j.id in self.result.kinds)
        print(f"soak: {len(self.result.kinds)} enqueued, {final} final, {self.result.kills} kills,"
              f" {self.result.terms} SIGTERMs, {len(self.result.violations)} violations",
              file=sys.stderr)

    def drain(self, drain: float, check_every: float) -> None:
        deadline = time.monotonic() + drain
        next_check = time.monotonic() + check_every
        while time.monotonic() < deadline:
            self.restart_stopped()
            try:
                if self.all_final():
                    return
            except StoreError:
                pass
            if time.monotonic() >= next_check:
                next_check += check_every
                self.check()
            time.sleep(0.5)

    def stop_all(self) -> None:
        for s in self.sups:
            if s.poll() is None:
                s.send_signal(signal.SIGTERM)
        for s in self.sups:
            try:
                s.wait(90)
            except subprocess.TimeoutExpired:
                self.result.violations.append(f"supervisor {s.pid} still running 90 s after SIGTERM")
                os.killpg(s.pid, signal.SIGKILL)
                s.wait()

    # --- the side file -------------------------------------------------------------------
    def count_executions(self) -> None:
        """Duplicates (a body that ran to success twice) and overlaps (one job running twice at
        the same moment) from the execution log."""
        lines = [ln.split() for ln in self.log.read_text().splitlines()] if self.log.exists() else []
        ok = Counter(int(f[1]) for f in lines if f[0] == "E" and f[-1] == "ok")
        self.result.duplicates = sum(c - 1 for c in ok.values() if c > 1)
        runs: dict[int, list[tuple[float, float, int]]] = defaultdict(list)  # job -> (start, end, pid)
        started: dict[tuple[int, str, int], float] = {}  # (job, attempt, pid) -> start
        for f in lines:
            key, at = (int(f[1]), f[2], int(f[3])), float(f[4])
            if f[0] == "S":
                started[key] = at
            elif key in started:
                runs[key[0]].append((started.pop(key), at, key[2]))
        for (job, _, pid), at in started.items():  # its process died: ended when we killed it
            if self.kill_times.get(pid, 0) > at:
                runs[job].append((at, self.kill_times[pid], pid))
        for job, spans in runs.items():
            spans.sort()
            for (s1, e1, p1), (s2, e2, p2) in itertools.pairwise(spans):
                if s2 < e1:
                    self.result.concurrent.append(
                        f"job {job} ({self.result.kinds.get(job)}) ran at once in pid {p1}"
                        f" ({s1:.3f}-{e1:.3f}) and pid {p2} ({s2:.3f}-{e2:.3f})")


def run(url: str, minutes: float, *, seed: int = 1, drain: float = 300, check_every: float = 20,
        kill_every: float = 4) -> Result:
    from bench import soak_jobs

    soak_jobs.app.close()
    soak_jobs.app.settings = replace(soak_jobs.app.settings, database_url=url)
    soak_jobs.app.migrate()
    try:
        return Soak(url, minutes, seed).run(drain, check_every, kill_every)
    finally:
        soak_jobs.app.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain", type=float, default=300, help="seconds allowed to finish")
    parser.add_argument("--check-every", type=float, default=20, help="seconds between checks")
    parser.add_argument("--kill-every", type=float, default=4, help="seconds between SIGKILLs")
    args = parser.parse_args()
    from bench.__main__ import fresh_store

    with fresh_store(args.store) as url:
        result = run(url, args.minutes, seed=args.seed, drain=args.drain,
                     check_every=args.check_every, kill_every=args.kill_every)
    print(result.table(args.store))
    sys.exit(1 if result.failed else 0)


if __name__ == "__main__":
    main()

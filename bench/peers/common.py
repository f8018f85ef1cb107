"""What every peer module shares: the stores, the probe, worker processes and bounded loops.

Every peer module has the same shape as conveyor's own measurement functions:

    STORE: str                      "redis" / "postgres" / ...
    WORKER: str                     the worker command line used for drain and latency
    PACKAGES: tuple[str, ...]       distributions whose versions the notes list
    BULK: str                       how "bulk enqueue" is done (or why there is none)
    enqueue_one(n)  -> jobs/s       one call per job, one client process
    enqueue_bulk(n) -> jobs/s|None  the system's API for many jobs at once; None if it has none
    drain(n)        -> jobs/s       n jobs queued first, then a worker started; wall time from the
                                    worker's launch until the n-th job has run
    latency(n)      -> (p50, p95, p99) ms, n jobs at ~100/s into an idle worker

Each call starts from an empty queue (Redis: FLUSHDB of the bench database; PostgreSQL: a
database created for the call and dropped afterwards), and stops its workers before it returns.
bench/peers/run.py calls one of them in a subprocess with a hard time limit.

The probe (one method for every system, conveyor included): the job's first statement appends
``"<i> <time.time()>\\n"`` to the file named by ``BENCH_PROBE_FILE`` (O_APPEND, one write(2)). The
client takes ``time.time()`` just before each enqueue call. Enqueue→start latency is the
difference; the drain is finished when the file has n lines. Jobs append only when the variable
is set, so the cost is one open/write/close per job for every system alike.

The round-trip job (``BENCH_ROUNDTRIP=1`` in the worker's environment, see ``roundtrip``): before
that append, the job sends one pipelined Redis INCR/SETNX/SET and waits for the reply, as a job
that touches a cache or an API would. Sync jobs use redis-py, async ones (``hit_async``) its asyncio
client, each with one connection pool per process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("CONVEYOR_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# a database number of its own, so FLUSHDB never touches anyone else's keys
REDIS_URL = os.environ.get("CONVEYOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
PG_PREFIX = "bench_peers_"
# run.py names the database of each run (so it can drop it after a kill); workers inherit the name
DB_NAME = os.environ.setdefault("BENCH_DB_NAME", f"{PG_PREFIX}{uuid.uuid4().hex[:8]}")
PG_URL = PG_ADMIN.rsplit("/", 1)[0] + "/" + DB_NAME

ENQUEUE_LIMIT = float(os.environ.get("BENCH_ENQUEUE_LIMIT", "90"))  # s per enqueue loop
DRAIN_LIMIT = float(os.environ.get("BENCH_DRAIN_LIMIT", "150"))  # s per drain
LATENCY_RATE = 100.0  # jobs/s offered in the latency run
IDLE_BEFORE_LATENCY = 2.0  # s the worker idles before the first latency job
LATENCY_GRACE = 20.0  # s allowed after the last enqueue for the last job to start

# Notes a run wants in the report (e.g. "drain hit the time limit"); printed as JSON by run.py.
NOTES: list[str] = []


# ---------------------------------------------------------------- probe (runs inside the job)

_probe_path = os.environ.get("BENCH_PROBE_FILE")
ROUNDTRIP = os.environ.get("BENCH_ROUNDTRIP") == "1"
ROUNDTRIP_KEY = "bench:roundtrip"
_rt_lock = threading.Lock()
_rt_sync: Any = None
_rt_async: dict[int, Any] = {}  # id(event loop) -> its asyncio client


def roundtrip(i: int) -> None:
    """One pipelined INCR/SETNX/SET on Redis: one round trip (the round-trip job's work)."""
    global _rt_sync
    if _rt_sync is None:
        with _rt_lock:
            if _rt_sync is None:
                _rt_sync = redis_client()
    pipe = _rt_sync.pipeline(transaction=False)
    pipe.incr(ROUNDTRIP_KEY + ":count")
    pipe.setnx(ROUNDTRIP_KEY + ":first", i)
    pipe.set(ROUNDTRIP_KEY + ":last", i)
    pipe.execute()


async def roundtrip_async(i: int) -> None:
    import asyncio

    import redis.asyncio

    loop = id(asyncio.get_running_loop())
    client = _rt_async.get(loop)
    if client is None:
        client = _rt_async[loop] = redis.asyncio.Redis.from_url(REDIS_URL)
    pipe = client.pipeline(transaction=False)
    pipe.incr(ROUNDTRIP_KEY + ":count")
    pipe.setnx(ROUNDTRIP_KEY + ":first", i)
    pipe.set(ROUNDTRIP_KEY + ":last", i)
    await pipe.execute()


async def hit_async(i: int) -> None:
    """``hit`` for async jobs: the round trip (if on) through the asyncio client, then the append."""
    if ROUNDTRIP:
        await roundtrip_async(i)
    _append(i)


def hit(i: int) -> None:
    """First statement of every benchmark job, in every system (after the round trip, if on)."""
    if ROUNDTRIP:
        roundtrip(i)
    _append(i)


def _append(i: int) -> None:
    if _probe_path:
        fd = os.open(_probe_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"%d %.6f\n" % (i, time.time()))
        finally:
            os.close(fd)


class Probe:
    """The client side of the probe file: counts lines and reads the recorded start times."""

    def __init__(self) -> None:
        fd, name = tempfile.mkstemp(prefix="bench-probe-", suffix=".txt")
        os.close(fd)
        self.path = name
        self._seen = 0
        self._lines = 0

    def env(self) -> dict[str, str]:
        return {"BENCH_PROBE_FILE": self.path}

    def count(self) -> int:
        with open(self.path, "rb") as f:
            f.seek(self._seen)
            chunk = f.read()
        # count only complete lines
        end = chunk.rfind(b"\n") + 1
        self._lines += chunk.count(b"\n", 0, end)
        self._seen += end
        return self._lines

    def starts(self) -> dict[int, float]:
        out: dict[int, float] = {}
        with open(self.path, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    out.setdefault(int(parts[0]), float(parts[1]))  # first start counts
        return out

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


# ---------------------------------------------------------------- stores


def redis_client():  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(REDIS_URL)


def flush_redis() -> None:
    r = redis_client()
    r.flushdb()
    r.close()


@contextlib.contextmanager
def fresh_pg() -> Iterator[str]:
    """The run's PostgreSQL database (DB_NAME), created empty; dropped afterwards. Yields PG_URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')
    try:
        yield PG_URL
    finally:
        drop_pg(DB_NAME)


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------- worker processes


def spawn(args: list[str], env: dict[str, str] | None = None,
          log: str | None = None) -> subprocess.Popen[bytes]:
    """Start a worker. It stays in this process's group, so run.py's time limit (a SIGKILL to the
    group) takes it down too; its output goes to ``log`` (shown if the run fails)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(args, env=full_env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def kill_tree(proc: subprocess.Popen[bytes], grace: float = 5) -> None:
    """SIGTERM the worker, then SIGKILL it and every descendant still alive after ``grace`` s."""
    import psutil

    try:
        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    psutil.wait_procs(family, timeout=5)


@contextlib.contextmanager
def worker(args: list[str], env: dict[str, str] | None = None,
           copies: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``copies`` worker processes started with ``args``; all stopped (then killed) on exit."""
    log = os.environ.get("BENCH_WORKER_LOG")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(copies):
            procs.append(spawn(args, env, log))
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            kill_tree(proc)


def check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with status {proc.returncode}")


# ---------------------------------------------------------------- bounded loops


def timed_enqueue(n: int, enqueue: Callable[[int], object], label: str = "enqueue 1-by-1") -> float:
    """Call ``enqueue(i)`` for i in range(n), within ENQUEUE_LIMIT s; jobs/s achieved."""
    start = time.perf_counter()
    deadline = start + ENQUEUE_LIMIT
    done = 0
    for i in range(n):
        enqueue(i)
        done += 1
        if not done % 256 and time.perf_counter() > deadline:
            NOTES.append(f"{label}: stopped at the {ENQUEUE_LIMIT:.0f} s limit after {done:,} of {n:,} jobs")
            break
    return done / (time.perf_counter() - start)


def timed_batches(n: int, enqueue_batch: Callable[[range], object], size: int = 1000,
                  label: str = "bulk enqueue") -> float:
    start = time.perf_counter()
    deadline = start + ENQUEUE_LIMIT
    done = 0
    for first in range(0, n, size):
        batch = range(first, min(n, first + size))
        enqueue_batch(batch)
        done += len(batch)
        if time.perf_counter() > deadline:
            NOTES.append(f"{label}: stopped at the {ENQUEUE_LIMIT:.0f} s limit after {done:,} of {n:,} jobs")
            break
    return done / (time.perf_counter() - start)


def wait_drained(probe: Probe, n: int, procs: list[subprocess.Popen[bytes]], start: float) -> float:
    """Poll the probe until n jobs have run (or DRAIN_LIMIT); jobs/s since ``start``."""
    deadline = start + DRAIN_LIMIT
    done = probe.count()
    while done < n and time.perf_counter() < deadline:
        check_alive(procs)
        time.sleep(0.02)
        done = probe.count()
    elapsed = time.perf_counter() - start
    if done < n:
        NOTES.append(f"drain: stopped at the {DRAIN_LIMIT:.0f} s limit after {done:,} of {n:,} jobs")
    return done / elapsed


def drain_with(n: int, fill: Callable[[int], object], args: list[str], env: dict[str, str] | None = None,
               copies: int = 1) -> float:
    """Queue n jobs with ``fill(n)``, launch the worker, time until the probe has n lines."""
    probe = Probe()
    try:
        fill(n)
        start = time.perf_counter()
        with worker(args, {**(env or {}), **probe.env()}, copies) as procs:
            return wait_drained(probe, n, procs, start)
    finally:
        probe.close()


def latency_with(n: int, enqueue: Callable[[int], object], args: list[str], env: dict[str, str] | None = None,
                 copies: int = 1) -> tuple[float, float, float]:
    """Start the worker, let it idle, enqueue n jobs at LATENCY_RATE/s, return p50/p95/p99 in ms
    of (job's recorded start - client's time.time() just before the enqueue call)."""
    probe = Probe()
    try:
        with worker(args, {**(env or {}), **probe.env()}, copies) as procs:
            # the worker is idle once it has run a warm-up job (id -1) and then slept a little
            enqueue(-1)
            deadline = time.monotonic() + 60
            while -1 not in probe.starts():
                check_alive(procs)
                if time.monotonic() > deadline:
                    raise RuntimeError("worker did not run the warm-up job within 60 s")
                time.sleep(0.05)
            time.sleep(IDLE_BEFORE_LATENCY)
            sent: dict[int, float] = {}
            begin = time.perf_counter()
            for i in range(n):
                pause = begin + i / LATENCY_RATE - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                sent[i] = time.time()
                enqueue(i)
            deadline = time.monotonic() + LATENCY_GRACE
            while probe.count() < n + 1 and time.monotonic() < deadline:
                check_alive(procs)
                time.sleep(0.05)
        starts = probe.starts()
    finally:
        probe.close()
    waits = sorted((starts[i] - t) * 1000 for i, t in sent.items() if i in starts)
    missing = n - len(waits)
    if missing:
        NOTES.append(f"latency: {missing} of {n} jobs had not started {LATENCY_GRACE:.0f} s "
                     "after the last enqueue")
        waits += [float("inf")] * missing
    q = statistics.quantiles(waits, n=100, method="inclusive")
    return q[49], q[94], q[98]


async def timed_enqueue_async(n: int, enqueue: Callable[[int], Any], label: str = "enqueue 1-by-1") -> float:
    """timed_enqueue for asyncio clients: ``await enqueue(i)`` one after another in one event loop."""
    start = time.perf_counter()
    deadline = start + ENQUEUE_LIMIT
    done = 0
    for i in range(n):
        await enqueue(i)
        done += 1
        if not done % 256 and time.perf_counter() > deadline:
            NOTES.append(f"{label}: stopped at the {ENQUEUE_LIMIT:.0f} s limit after {done:,} of {n:,} jobs")
            break
    return done / (time.perf_counter() - start)


class RedisPeer:
    """The four measurements for a Redis-backed peer that has one call to enqueue a job and one
    to enqueue a batch; each starts from an empty Redis."""

    def __init__(self, enqueue: Callable[[int], object], bulk: Callable[[range], object],
                 args: list[str]) -> None:
        self.enqueue, self.bulk, self.args = enqueue, bulk, args

    def enqueue_one(self, n: int) -> float:
        flush_redis()
        return timed_enqueue(n, self.enqueue)

    def enqueue_bulk(self, n: int) -> float:
        flush_redis()
        return timed_batches(n, self.bulk)

    def drain(self, n: int) -> float:
        flush_redis()
        return drain_with(n, lambda n: timed_batches(n, self.bulk), self.args)

    def latency(self, n: int) -> tuple[float, float, float]:
        flush_redis()
        return latency_with(n, self.enqueue, self.args)

"""Floors with no job system around them, measured in the same run as the systems they bound.

- ``roundtrip_loop(n)``: the round-trip job's body (one pipelined Redis INCR/SETNX/SET, then the
  probe's append) called n times in a bare loop by 2 processes, n/2 each: the most jobs/s any
  job system could drain of that job on this machine. Round trips/s.
- ``pg_latency(n)``: PostgreSQL's enqueue→claim latency floor, paced like the latency run (n jobs
  at ~100/s into an idle listener). A client process inserts a row and sends NOTIFY in one
  autocommit transaction; a worker process blocks on LISTEN, and on each notification claims the
  row (``UPDATE … FOR UPDATE SKIP LOCKED … RETURNING``, its own commit). Returns the p50 and p99,
  in ms from the start of the enqueue call, of: the enqueue's commit, the notification's
  arrival, the claim's commit.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from typing import Any

from bench.peers import common

STORE = "redis / postgres"
PACKAGES = ("redis", "psycopg", "psycopg-binary")
LOOP_PROCESSES = 2


def _loop(first: int, count: int, start: Any, done: Any) -> None:
    common.ROUNDTRIP = True
    common.roundtrip(first)  # connect before the start line
    start.wait()
    for i in range(first, first + count):
        common.hit(i)
    with done.get_lock():
        done.value += count


def roundtrip_loop(n: int) -> float:
    common.flush_redis()
    probe = common.Probe()
    os.environ.update(probe.env())
    common._probe_path = probe.path
    try:
        start = multiprocessing.Event()
        done = multiprocessing.Value("q", 0)
        share = n // LOOP_PROCESSES
        procs = [multiprocessing.Process(target=_loop, args=(k * share, share, start, done))
                 for k in range(LOOP_PROCESSES)]
        for p in procs:
            p.start()
        time.sleep(0.5)  # every process connected
        began = time.perf_counter()
        start.set()
        for p in procs:
            p.join(common.DRAIN_LIMIT)
        elapsed = time.perf_counter() - began
        if probe.count() != share * LOOP_PROCESSES:
            raise RuntimeError(f"bare loop: {probe.count()} of {share * LOOP_PROCESSES} appends")
        return done.value / elapsed
    finally:
        probe.close()


SCHEMA = """
CREATE TABLE jobs (id bigserial PRIMARY KEY, arg int NOT NULL, state text NOT NULL DEFAULT 'ready',
                   claimed_at timestamptz);
CREATE INDEX jobs_ready ON jobs (id) WHERE state = 'ready';
"""
ENQUEUE = "INSERT INTO jobs (arg) VALUES (%s)"
NOTIFY = "NOTIFY floor_jobs"
CLAIM = """UPDATE jobs SET state = 'running', claimed_at = now() WHERE id IN (
    SELECT id FROM jobs WHERE state = 'ready' ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED)
RETURNING arg"""


def _listener(url: str, ready: Any, out: Any) -> None:
    import psycopg

    seen: dict[int, tuple[float, float]] = {}
    with psycopg.connect(url, autocommit=True) as listen, psycopg.connect(url, autocommit=True) as conn:
        listen.execute("LISTEN floor_jobs")
        ready.set()
        while True:
            woke = None
            for _ in listen.notifies(timeout=5, stop_after=1):
                woke = time.time()
            if woke is None:
                break  # the client is done
            for _ in listen.notifies(timeout=0):
                pass
            rows = conn.execute(CLAIM).fetchall()
            claimed = time.time()
            for (arg,) in rows:
                seen[arg] = (woke, claimed)
            if -1 in seen:
                break
    out.put(seen)


def pg_latency(n: int) -> list[float]:
    import psycopg

    with common.fresh_pg() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
        ready, out = multiprocessing.Event(), multiprocessing.Queue()
        worker = multiprocessing.Process(target=_listener, args=(url, ready, out))
        worker.start()
        ready.wait(30)
        time.sleep(common.IDLE_BEFORE_LATENCY)
        sent: dict[int, tuple[float, float]] = {}
        begin = time.perf_counter()
        for i in range(n):
            pause = begin + i / common.LATENCY_RATE - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            t0 = time.time()
            with conn.transaction():
                conn.execute(ENQUEUE, (i,))
                conn.execute(NOTIFY)
            sent[i] = (t0, time.time())
        time.sleep(0.2)
        with conn.transaction():
            conn.execute(ENQUEUE, (-1,))
            conn.execute(NOTIFY)
        seen = out.get(timeout=60)
        worker.join(10)
    commit, woke, claimed = [], [], []
    for i, (t0, t1) in sent.items():
        commit.append((t1 - t0) * 1000)
        if i in seen:
            woke.append((seen[i][0] - t0) * 1000)
            claimed.append((seen[i][1] - t0) * 1000)
    if len(claimed) < n:
        common.NOTES.append(f"latency floor: {n - len(claimed)} of {n} rows were not claimed")
    out_values: list[float] = []
    for values in (commit, woke, claimed):
        q = statistics.quantiles(values, n=100, method="inclusive")
        out_values += [q[49], q[98]]
    return out_values

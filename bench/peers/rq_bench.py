"""RQ: `rq worker-pool` with the default Worker class (forks a work horse per job)."""

from __future__ import annotations

import os

from rq import Queue

from bench.peers import common

WORKERS = int(os.environ.get("BENCH_RQ_WORKERS", "2"))
WORKER_CLASS = os.environ.get("BENCH_RQ_WORKER_CLASS", "")  # e.g. rq.worker.SimpleWorker
STORE = "redis"
WORKER = f"rq worker-pool -n {WORKERS} (default Worker: one fork per job)"
PACKAGES = ("rq", "redis")
BULK = "Queue.enqueue_many (one pipeline per 1,000)"
DRAIN_MAX = 4_000  # the default Worker forks per job: ~100 jobs/s here, so a shorter drain
ARGS = [str(common.BIN / "rq"), "worker-pool", "-n", str(WORKERS), "-u", common.REDIS_URL, "--quiet",
        *(["-w", WORKER_CLASS] if WORKER_CLASS else []), "bench"]


def noop(i: int) -> None:
    common.hit(i)


def _queue() -> Queue:
    common.flush_redis()
    return Queue("bench", connection=common.redis_client())


def _bulk(q: Queue, batch: range) -> None:
    q.enqueue_many([Queue.prepare_data(noop, (i,)) for i in batch])


def enqueue_one(n: int) -> float:
    q = _queue()
    return common.timed_enqueue(n, lambda i: q.enqueue(noop, i))


def enqueue_bulk(n: int) -> float:
    q = _queue()
    return common.timed_batches(n, lambda b: _bulk(q, b))


def drain(n: int) -> float:
    q = _queue()
    return common.drain_with(n, lambda n: common.timed_batches(n, lambda b: _bulk(q, b)), ARGS)


def latency(n: int) -> tuple[float, float, float]:
    q = _queue()
    return common.latency_with(n, lambda i: q.enqueue(noop, i), ARGS)

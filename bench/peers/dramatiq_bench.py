"""Dramatiq with the Redis broker (no result backend, no retries)."""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.peers import common

PROCESSES = int(os.environ.get("BENCH_DRAMATIQ_PROCESSES", "2"))
THREADS = int(os.environ.get("BENCH_DRAMATIQ_THREADS", "4"))
STORE = "redis"
WORKER = f"dramatiq --processes {PROCESSES} --threads {THREADS}"
PACKAGES = ("dramatiq", "redis")
BULK = "group(...).run(): one message per job, no batching"
ARGS = [str(common.BIN / "dramatiq"), "bench.peers.dramatiq_bench", "--processes", str(PROCESSES),
        "--threads", str(THREADS), "--queues", "bench"]

broker = RedisBroker(url=common.REDIS_URL)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="bench", max_retries=0)
def noop(i: int) -> None:
    common.hit(i)


def _bulk(batch: range) -> None:
    dramatiq.group(noop.message(i) for i in batch).run()


def enqueue_one(n: int) -> float:
    common.flush_redis()
    return common.timed_enqueue(n, noop.send)


def enqueue_bulk(n: int) -> float:
    common.flush_redis()
    return common.timed_batches(n, _bulk)


def drain(n: int) -> float:
    common.flush_redis()
    return common.drain_with(n, lambda n: common.timed_batches(n, _bulk), ARGS)


def latency(n: int) -> tuple[float, float, float]:
    common.flush_redis()
    return common.latency_with(n, noop.send, ARGS)

"""Celery with the Redis broker, no result backend (results ignored), prefork pool."""

from __future__ import annotations

import os

from celery import Celery, group

from bench.peers import common

CONCURRENCY = int(os.environ.get("BENCH_CELERY_CONCURRENCY", "2"))
STORE = "redis"
WORKER = (f"celery worker -P prefork -c {CONCURRENCY} (default prefetch x4, "
          "--without-gossip --without-mingle --without-heartbeat)")
PACKAGES = ("celery", "kombu", "billiard", "redis")
BULK = "group(...).apply_async(): one message per job, no batching"

app = Celery("bench", broker=common.REDIS_URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False,
                broker_connection_retry_on_startup=True, worker_send_task_events=False)


@app.task(name="noop")
def noop(i: int) -> None:
    common.hit(i)


ARGS = [str(common.BIN / "celery"), "-A", "bench.peers.celery_bench", "worker", "-P", "prefork",
        "-c", str(CONCURRENCY), "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", "WARNING"]


def enqueue_one(n: int) -> float:
    common.flush_redis()
    return common.timed_enqueue(n, noop.delay)


def _bulk(batch: range) -> None:
    group(noop.s(i) for i in batch).apply_async()


def enqueue_bulk(n: int) -> float:
    common.flush_redis()
    return common.timed_batches(n, _bulk)


def drain(n: int) -> float:
    common.flush_redis()
    return common.drain_with(n, lambda n: common.timed_batches(n, _bulk), ARGS)


def latency(n: int) -> tuple[float, float, float]:
    common.flush_redis()
    return common.latency_with(n, noop.delay, ARGS)

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


def _bulk(batch: range) -> None:
    group(noop.s(i) for i in batch).apply_async()


_peer = common.RedisPeer(noop.delay, _bulk, ARGS)
enqueue_one, enqueue_bulk = _peer.enqueue_one, _peer.enqueue_bulk
drain, latency = _peer.drain, _peer.latency

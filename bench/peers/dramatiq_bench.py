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


_peer = common.RedisPeer(noop.send, _bulk, ARGS)
enqueue_one, enqueue_bulk = _peer.enqueue_one, _peer.enqueue_bulk
drain, latency = _peer.drain, _peer.latency

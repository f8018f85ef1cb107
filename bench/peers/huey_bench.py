"""Huey with Redis (results off, blocking BRPOP reads)."""

from __future__ import annotations

import os
from urllib.parse import urlparse

from huey import RedisHuey

from bench.peers import common

WORKERS = int(os.environ.get("BENCH_HUEY_WORKERS", "4"))
KIND = os.environ.get("BENCH_HUEY_KIND", "thread")
STORE = "redis"
WORKER = f"huey_consumer -w {WORKERS} -k {KIND}"
PACKAGES = ("huey", "redis")
BULK = "task.map(...): one LPUSH per job, no batching"
ARGS = [str(common.BIN / "huey_consumer"), "bench.peers.huey_bench.huey", "-w", str(WORKERS), "-k", KIND,
        "-q", "-n"]

_url = urlparse(common.REDIS_URL)
huey = RedisHuey("bench", host=_url.hostname, port=_url.port or 6379, db=int(_url.path.lstrip("/") or 0),
                 results=False, blocking=True)


@huey.task()
def noop(i: int) -> None:
    common.hit(i)


def _bulk(batch: range) -> None:
    noop.map(batch)


_peer = common.RedisPeer(noop, _bulk, ARGS)
enqueue_one, enqueue_bulk = _peer.enqueue_one, _peer.enqueue_bulk
drain, latency = _peer.drain, _peer.latency

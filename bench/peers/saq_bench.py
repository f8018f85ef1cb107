"""SAQ (asyncio, Redis) with its defaults."""

from __future__ import annotations

import asyncio
import os

from saq import Queue

from bench.peers import common

PROCESSES = int(os.environ.get("BENCH_SAQ_PROCESSES", "2"))
CONCURRENCY = int(os.environ.get("BENCH_SAQ_CONCURRENCY", "10"))
STORE = "redis"
WORKER = f"saq --workers {PROCESSES} (concurrency {CONCURRENCY} each)"
PACKAGES = ("saq", "redis")
BULK = None  # saq has no API to enqueue many jobs in one call (Queue.batch only groups aborts)
ARGS = [str(common.BIN / "saq"), "bench.peers.saq_bench.settings", "--workers", str(PROCESSES), "--quiet"]


async def noop(ctx: dict, *, i: int) -> None:  # type: ignore[type-arg]
    await common.hit_async(i)


def _queue() -> Queue:
    return Queue.from_url(common.REDIS_URL, name="bench")


settings = {"queue": _queue(), "functions": [noop], "concurrency": CONCURRENCY}


def enqueue_one(n: int) -> float:
    common.flush_redis()

    async def go() -> float:
        q = _queue()
        await q.connect()
        try:
            return await common.timed_enqueue_async(n, lambda i: q.enqueue("noop", i=i))
        finally:
            await q.disconnect()

    return asyncio.run(go())


def _fill(n: int) -> None:
    async def go() -> None:
        q = _queue()
        await q.connect()
        try:
            for i in range(n):
                await q.enqueue("noop", i=i)
        finally:
            await q.disconnect()

    asyncio.run(go())


def drain(n: int) -> float:
    common.flush_redis()
    return common.drain_with(n, _fill, ARGS)


def latency(n: int) -> tuple[float, float, float]:
    common.flush_redis()
    loop = asyncio.new_event_loop()
    q = _queue()
    loop.run_until_complete(q.connect())
    try:
        return common.latency_with(n, lambda i: loop.run_until_complete(q.enqueue("noop", i=i)), ARGS)
    finally:
        loop.run_until_complete(q.disconnect())
        loop.close()

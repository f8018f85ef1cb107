"""arq (asyncio, Redis) with its defaults: results kept, jobs polled every 0.5 s."""

from __future__ import annotations

import asyncio
import os

from bench.peers import common

try:
    from arq import create_pool
    from arq.connections import RedisSettings
except ImportError as e:  # not in bench/requirements.txt: see there
    raise RuntimeError("not installed: arq 0.28 requires redis<6, Celery's kombu 5.7 redis>=6.1") from e

PROCESSES = int(os.environ.get("BENCH_ARQ_PROCESSES", "2"))
STORE = "redis"
WORKER = f"{PROCESSES} x arq worker (max_jobs 10, poll_delay 0.5 s: the defaults)"
PACKAGES = ("arq", "redis")
BULK = None  # arq has no API to enqueue many jobs at once
DRAIN_MAX = 4_000  # ~200 jobs/s with the default polling, so a shorter drain
ARGS = [str(common.BIN / "arq"), "bench.peers.arq_bench.WorkerSettings"]
REDIS = RedisSettings.from_dsn(common.REDIS_URL)


async def noop(ctx: dict, i: int) -> None:  # type: ignore[type-arg]
    await common.hit_async(i)


class WorkerSettings:
    functions = [noop]
    redis_settings = REDIS


def enqueue_one(n: int) -> float:
    common.flush_redis()

    async def go() -> float:
        pool = await create_pool(REDIS)
        try:
            return await common.timed_enqueue_async(n, lambda i: pool.enqueue_job("noop", i))
        finally:
            await pool.aclose()

    return asyncio.run(go())


def _fill(n: int) -> None:
    async def go() -> None:
        pool = await create_pool(REDIS)
        try:
            for i in range(n):
                await pool.enqueue_job("noop", i)
        finally:
            await pool.aclose()

    asyncio.run(go())


def drain(n: int) -> float:
    common.flush_redis()
    return common.drain_with(n, _fill, ARGS, copies=PROCESSES)


def latency(n: int) -> tuple[float, float, float]:
    common.flush_redis()
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(create_pool(REDIS))
    try:
        return common.latency_with(n, lambda i: loop.run_until_complete(pool.enqueue_job("noop", i)), ARGS,
                                   copies=PROCESSES)
    finally:
        loop.run_until_complete(pool.aclose())
        loop.close()

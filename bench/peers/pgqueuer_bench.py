"""PgQueuer on PostgreSQL (psycopg async driver; an async entrypoint)."""

from __future__ import annotations

import contextlib
import os

from bench.peers import common

PROCESSES = int(os.environ.get("BENCH_PGQUEUER_PROCESSES", "2"))
BATCH = int(os.environ.get("BENCH_PGQUEUER_BATCH", "10"))
STORE = "postgres"
WORKER = f"{PROCESSES} x pgqueuer.run(factory, batch_size={BATCH}) (async entrypoint, no concurrency limit)"
PACKAGES = ("pgqueuer", "psycopg")
BULK = "Queries.enqueue with lists (1,000 per call)"
# `pgq run` itself fails at start-up in pgqueuer 1.6.0 (setup_fancy_logger is handed the log level as a
# str: AttributeError 'str' object has no attribute 'name'), so each worker process runs the same
# loop through the library's documented equivalent, pgqueuer.run(factory, ...), from main() below.
ARGS = [common.sys.executable, "-m", "bench.peers.pgqueuer_bench"]


@contextlib.asynccontextmanager
async def create():  # type: ignore[no-untyped-def]
    """The factory pgqueuer.run() enters in each worker process."""
    import psycopg
    from pgqueuer import Job, PgQueuer, PsycopgDriver

    async with await psycopg.AsyncConnection.connect(common.PG_URL, autocommit=True) as conn:
        pgq = PgQueuer(PsycopgDriver(conn))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            await common.hit_async(int(job.payload or b"0"))

        yield pgq


class _Client:
    def __init__(self) -> None:
        import asyncio

        import psycopg
        from pgqueuer.adapters.drivers.psycopg import SyncPsycopgDriver
        from pgqueuer.queries import Queries, SyncQueries

        self.store = common.fresh_pg()
        self.store.__enter__()

        async def install() -> None:
            from pgqueuer import PsycopgDriver

            async with await psycopg.AsyncConnection.connect(common.PG_URL, autocommit=True) as conn:
                await Queries(PsycopgDriver(conn)).install()

        asyncio.run(install())
        self.conn = psycopg.connect(common.PG_URL, autocommit=True)
        self.queries = SyncQueries(SyncPsycopgDriver(self.conn))

    def one(self, i: int) -> None:
        self.queries.enqueue("noop", b"%d" % i)

    def bulk(self, batch: range) -> None:
        self.queries.enqueue(["noop"] * len(batch), [b"%d" % i for i in batch], [0] * len(batch))

    def close(self) -> None:
        self.conn.close()
        self.store.__exit__(None, None, None)


def enqueue_one(n: int) -> float:
    c = _Client()
    try:
        return common.timed_enqueue(n, c.one)
    finally:
        c.close()


def enqueue_bulk(n: int) -> float:
    c = _Client()
    try:
        return common.timed_batches(n, c.bulk)
    finally:
        c.close()


def drain(n: int) -> float:
    c = _Client()
    try:
        return common.drain_with(n, lambda n: common.timed_batches(n, c.bulk), ARGS, copies=PROCESSES)
    finally:
        c.close()


def latency(n: int) -> tuple[float, float, float]:
    c = _Client()
    try:
        return common.latency_with(n, c.one, ARGS, copies=PROCESSES)
    finally:
        c.close()


def main() -> None:
    import asyncio
    from datetime import timedelta

    import pgqueuer

    asyncio.run(pgqueuer.run(create, batch_size=BATCH, dequeue_timeout=timedelta(seconds=30)))


if __name__ == "__main__":
    main()

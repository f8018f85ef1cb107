"""conveyor itself, through bench/__main__.py's own measurement functions (latency via the probe)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import replace

from bench.peers import common

PROCESSES = int(os.environ.get("CONVEYOR_BENCH_PROCESSES", "2"))
CONCURRENCY = int(os.environ.get("CONVEYOR_BENCH_CONCURRENCY", "8"))
STORE = "sqlite"
WORKER = f"conveyor worker --processes {PROCESSES} --concurrency {CONCURRENCY}"
PACKAGES = ("conveyor", "psycopg", "psycopg-binary", "psycopg-pool")
BULK = "app.enqueue_many (1,000 per call)"


def configure(variant: str) -> None:
    global STORE
    STORE = variant


@contextlib.contextmanager
def _store() -> Iterator[str]:
    from bench.__main__ import fresh_store

    if STORE == "postgres":
        # the name run.py chose, so a killed run's database is dropped by the parent
        with common.fresh_pg() as url:
            yield url
    else:
        with fresh_store(STORE) as url:
            yield url


def enqueue_one(n: int) -> float:
    from bench.__main__ import enqueue_one as conveyor_enqueue_one

    with _store() as url:
        return conveyor_enqueue_one(url, n)


def enqueue_bulk(n: int) -> float:
    from bench.__main__ import enqueue_bulk as conveyor_enqueue_bulk

    with _store() as url:
        return conveyor_enqueue_bulk(url, n)


def drain(n: int) -> float:
    from bench.__main__ import drain as conveyor_drain

    with _store() as url:
        return conveyor_drain(url, n, PROCESSES, CONCURRENCY, limit=common.DRAIN_LIMIT)


def latency(n: int) -> tuple[float, float, float]:
    from bench.peers import conveyor_probe

    app = conveyor_probe.app
    with _store() as url:
        app.close()
        app.settings = replace(app.settings, database_url=url)
        app.migrate()
        args = [sys.executable, "-m", "conveyor", "-A", "bench.peers.conveyor_probe:app", "worker",
                "--processes", str(PROCESSES), "--concurrency", str(CONCURRENCY)]
        env = {"CONVEYOR_DATABASE_URL": url, "CONVEYOR_LOG_LEVEL": "WARNING"}
        try:
            return common.latency_with(n, conveyor_probe.noop.enqueue, args, env)
        finally:
            app.close()

"""Procrastinate on PostgreSQL (psycopg connector, LISTEN/NOTIFY on)."""

from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

from bench.peers import common

PROCESSES = int(os.environ.get("BENCH_PROCRASTINATE_PROCESSES", "2"))
CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "8"))
STORE = "postgres"
WORKER = f"{PROCESSES} x procrastinate worker --concurrency {CONCURRENCY}"
PACKAGES = ("procrastinate", "psycopg", "psycopg-pool")
BULK = "task.batch_defer (1,000 per call)"
ARGS = [str(common.BIN / "procrastinate"), "--app=bench.peers.procrastinate_bench.app", "--log-level",
        "warning", "worker", "--queues", "bench", "--concurrency", str(CONCURRENCY)]

app = App(connector=PsycopgConnector(conninfo=common.PG_URL))


@app.task(name="noop", queue="bench")
def noop(i: int) -> None:
    common.hit(i)


def _bulk(batch: range) -> None:
    noop.batch_defer(*({"i": i} for i in batch))


def _fresh():  # type: ignore[no-untyped-def]
    store = common.fresh_pg()
    store.__enter__()
    app.open()
    app.schema_manager.apply_schema()
    return store


def _close(store) -> None:  # type: ignore[no-untyped-def]
    app.close()
    store.__exit__(None, None, None)


def enqueue_one(n: int) -> float:
    store = _fresh()
    try:
        return common.timed_enqueue(n, lambda i: noop.defer(i=i))
    finally:
        _close(store)


def enqueue_bulk(n: int) -> float:
    store = _fresh()
    try:
        return common.timed_batches(n, _bulk)
    finally:
        _close(store)


def drain(n: int) -> float:
    store = _fresh()
    try:
        return common.drain_with(n, lambda n: common.timed_batches(n, _bulk), ARGS, copies=PROCESSES)
    finally:
        _close(store)


def latency(n: int) -> tuple[float, float, float]:
    store = _fresh()
    try:
        return common.latency_with(n, lambda i: noop.defer(i=i), ARGS, copies=PROCESSES)
    finally:
        _close(store)

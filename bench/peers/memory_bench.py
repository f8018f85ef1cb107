"""conveyor's worker RSS after 10k and after N jobs (bench/memory.py's measure), as a run.py system."""

from __future__ import annotations

from bench.peers import common

STORE = "sqlite"
WORKER = "conveyor worker --processes 1 --concurrency 8 (RSS of the worker child)"
PACKAGES = ("conveyor",)


def rss(n: int) -> dict[str, int]:
    from bench.__main__ import fresh_store
    from bench.memory import measure

    checkpoints = tuple(sorted({min(10_000, n), n}))
    with fresh_store(STORE) as url:
        readings = measure(url, n, checkpoints, limit=common.DRAIN_LIMIT * 4)
    missing = [c for c in checkpoints if c not in readings]
    if missing:
        common.NOTES.append(f"memory: the run ended before {missing[0]:,} jobs were done")
    return {str(k): v for k, v in readings.items()}

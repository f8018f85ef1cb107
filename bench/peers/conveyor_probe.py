"""A conveyor app whose jobs record their start in the probe file (the drain and latency workloads)."""

from __future__ import annotations

from bench.peers.common import hit
from conveyor import Conveyor, Limit

app = Conveyor()


@app.job
def noop(i: int) -> None:
    hit(i)


@app.job(concurrency=Limit(key=lambda i: f"k:{i % 100}", max=1))
def noop_keyed(i: int) -> None:
    """noop under a concurrency limit of 1 per key, 100 distinct keys (bench/flow.py)."""
    hit(i)

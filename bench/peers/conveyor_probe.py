"""A conveyor app whose job records its start in the probe file (the latency workload)."""

from __future__ import annotations

from bench.peers.common import hit
from conveyor import Conveyor

app = Conveyor()


@app.job
def noop(i: int) -> None:
    hit(i)

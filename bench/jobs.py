"""The benchmark workload: a no-op job with one int argument (and the same job kept unique)."""

from __future__ import annotations

from conveyor import Conveyor

app = Conveyor()


@app.job
def noop(i: int) -> None:
    return None


@app.job(unique=True)
def noop_unique(i: int) -> None:
    return None
